/**
 * amarre permission gate for pi.
 *
 * The amarre daemon loads this extension with `pi --mode rpc -e <file>`. It
 * asks the remote user before every tool call: `ctx.ui.confirm` becomes an
 * `extension_ui_request` (method `confirm`) on pi's stdout, which amarre
 * relays to the phone, and waits for the matching `extension_ui_response`.
 * A denial, a cancel or a timeout blocks the tool.
 *
 * Configuration (environment, from the daemon, the instance or the session):
 *   AMARRE_PI_GATE_ALLOW       comma list of tool names that never ask
 *                              (default: empty, every tool asks)
 *   AMARRE_PI_GATE_TIMEOUT_MS  deny when no answer came within this many
 *                              milliseconds (default: unset, wait forever)
 */
import type { ExtensionAPI } from "@mariozechner/pi-coding-agent";

/** The longest tool input shown in the question, in characters. */
const MAX_MESSAGE_CHARS = 400;

function describeInput(input: unknown): string {
	let text: string;
	try {
		text = JSON.stringify(input) ?? "";
	} catch {
		text = String(input);
	}
	return text.length > MAX_MESSAGE_CHARS ? `${text.slice(0, MAX_MESSAGE_CHARS - 1)}…` : text;
}

export default function amarreGate(pi: ExtensionAPI) {
	const allow = new Set(
		(process.env.AMARRE_PI_GATE_ALLOW ?? "")
			.split(",")
			.map((name) => name.trim())
			.filter((name) => name.length > 0),
	);
	const timeoutMs = Number.parseInt(process.env.AMARRE_PI_GATE_TIMEOUT_MS ?? "", 10);
	const options = Number.isFinite(timeoutMs) && timeoutMs > 0 ? { timeout: timeoutMs } : undefined;

	pi.on("tool_call", async (event, ctx) => {
		if (allow.has(event.toolName)) return undefined;
		const confirmed = await ctx.ui.confirm(`Run ${event.toolName}?`, describeInput(event.input), options);
		if (!confirmed) {
			return { block: true, reason: `The remote user declined to run ${event.toolName}.` };
		}
		return undefined;
	});
}
