// Pull-to-refresh's arithmetic (src/pull.ts) and what the Changes view says
// when a review route fails (src/changes.tsx).
import { describe, expect, it } from "vitest";
import { ApiError } from "../../src/api";
import { reviewError } from "../../src/changes";
import { PULL_MAX, PULL_THRESHOLD, pullArmed, pullMove, pullStart } from "../../src/pull";

describe("pull-to-refresh", () => {
  it("starts only on a view scrolled to its top", () => {
    expect(pullStart(0, 100)).toEqual({ startY: 100, distance: 0 });
    expect(pullStart(1, 100)).toBeNull();
    expect(pullStart(400, 100)).toBeNull();
  });

  it("follows the finger at half its travel, never above the start nor past the maximum", () => {
    const p = pullStart(0, 100)!;
    expect(pullMove(p, 140).distance).toBe(20);
    expect(pullMove(p, 60).distance).toBe(0);
    expect(pullMove(p, 100 + 4 * PULL_MAX).distance).toBe(PULL_MAX);
  });

  it("refreshes only once pulled past the threshold", () => {
    const p = pullStart(0, 0)!;
    expect(pullArmed(null)).toBe(false);
    expect(pullArmed(p)).toBe(false);
    expect(pullArmed(pullMove(p, 2 * PULL_THRESHOLD - 2))).toBe(false);
    expect(pullArmed(pullMove(p, 2 * PULL_THRESHOLD))).toBe(true);
    // Pulled far, then back up: released below the threshold, nothing.
    expect(pullArmed(pullMove(pullMove(p, 300), 10))).toBe(false);
  });
});

describe("review errors", () => {
  it("a repository over the time limit (504) says so and can be retried", () => {
    const e = reviewError(new ApiError(504, { error: "review_timeout" }));
    expect(e.retry).toBe(true);
    expect(e.text).toMatch(/too large/);
    expect(e.text).toMatch(/time limit/);
  });

  it("a cwd that is not a repository is final", () => {
    expect(reviewError(new ApiError(422, { error: "not_a_repository" }))).toEqual({ text: "Not a git repository", retry: false });
  });

  it("anything else shows the error and can be retried", () => {
    const e = reviewError(new ApiError(0, {}));
    expect(e).toEqual({ text: "The daemon cannot be reached.", retry: true });
  });
});
