// Pull-to-refresh for a scrolling view on a touch screen: a finger that
// starts while the view is scrolled to its top and pulls down far enough
// refreshes it when lifted. The gesture's arithmetic is plain functions
// (unit-tested); `usePullToRefresh` wires them to touch events.
import type { RefObject } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

/** How far (CSS px, after resistance) a pull must go to refresh. */
export const PULL_THRESHOLD = 64;
/** The furthest the indicator follows the finger. */
export const PULL_MAX = 96;
/** The indicator moves half as far as the finger. */
const RESISTANCE = 0.5;

/** A gesture in progress: where the finger started, how far it pulled. */
export type Pull = { startY: number; distance: number };

/** A touch starts a pull only on a view scrolled to its top. */
export function pullStart(scrollTop: number, y: number): Pull | null {
  return scrollTop <= 0 ? { startY: y, distance: 0 } : null;
}

/** The finger moved to `y`: the indicator's distance (0 when pushing up). */
export function pullMove(pull: Pull, y: number): Pull {
  const distance = Math.min(PULL_MAX, Math.max(0, (y - pull.startY) * RESISTANCE));
  return { ...pull, distance };
}

/** Whether lifting the finger now refreshes. */
export function pullArmed(pull: Pull | null): boolean {
  return pull !== null && pull.distance >= PULL_THRESHOLD;
}

/**
 * Pull-to-refresh on the element `ref` points at (the scrolling view):
 * returns the current pull distance (0 when none) for the indicator.
 * While a pull is under way the page neither scrolls nor overscrolls (so a
 * phone's browser does not reload the whole page instead).
 */
export function usePullToRefresh(ref: RefObject<HTMLElement | null>, refresh: () => void, busy: boolean): Pull | null {
  const [pull, setPull] = useState<Pull | null>(null);
  const state = useRef<{ pull: Pull | null; refresh: () => void; busy: boolean }>({ pull: null, refresh, busy });
  state.current.refresh = refresh;
  state.current.busy = busy;

  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const set = (p: Pull | null) => {
      state.current.pull = p;
      setPull(p);
    };
    const start = (e: TouchEvent) => {
      if (e.touches.length !== 1 || state.current.busy) return set(null);
      set(pullStart(el.scrollTop, e.touches[0].clientY));
    };
    const move = (e: TouchEvent) => {
      const p = state.current.pull;
      if (!p || e.touches.length !== 1) return;
      const next = pullMove(p, e.touches[0].clientY);
      if (next.distance > 0 && e.cancelable) e.preventDefault();
      set(next);
    };
    const end = () => {
      const armed = pullArmed(state.current.pull);
      set(null);
      if (armed && !state.current.busy) state.current.refresh();
    };
    const cancel = () => set(null);
    el.addEventListener("touchstart", start, { passive: true });
    // Not passive: a pull cancels the page's own scrolling.
    el.addEventListener("touchmove", move, { passive: false });
    el.addEventListener("touchend", end);
    el.addEventListener("touchcancel", cancel);
    return () => {
      el.removeEventListener("touchstart", start);
      el.removeEventListener("touchmove", move);
      el.removeEventListener("touchend", end);
      el.removeEventListener("touchcancel", cancel);
    };
  }, [ref]);

  return pull;
}
