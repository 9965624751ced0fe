// Chrome traces for the browser benches (P4_TRACE, P3_TRACE): where the renderer's main
// thread spends its time by Blink/V8 event, which CDP's Performance metrics lump together
// (a wasm function's first-call compile, paint, a WebSocket message's task).
import { CDPSession } from "@playwright/test";
import { writeFileSync } from "node:fs";

export interface TraceEvent {
  name: string;
  ph: string;
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  args?: { name?: string };
}

/** Start recording the timeline, V8's execution and wasm compilation events. */
export async function startTrace(cdp: CDPSession): Promise<void> {
  await cdp.send("Tracing.start", {
    transferMode: "ReturnAsStream",
    traceConfig: {
      includedCategories: [
        "devtools.timeline",
        "disabled-by-default-devtools.timeline",
        "v8.execute",
        "v8.wasm",
        "disabled-by-default-v8.wasm.detailed",
        "blink",
        "cc",
      ],
    },
  });
}

/** Stop a trace started with `startTrace`, save it to `out` (for Perfetto or
 * chrome://tracing) and return its events. */
export async function stopTrace(cdp: CDPSession, out: string): Promise<TraceEvent[]> {
  const done = new Promise<string>((resolve) => cdp.once("Tracing.tracingComplete", (e) => resolve(e.stream!)));
  await cdp.send("Tracing.end");
  const stream = await done;
  let text = "";
  for (;;) {
    const chunk = await cdp.send("IO.read", { handle: stream });
    text += chunk.base64Encoded ? Buffer.from(chunk.data, "base64").toString() : chunk.data;
    if (chunk.eof) break;
  }
  await cdp.send("IO.close", { handle: stream });
  writeFileSync(out, text);
  const parsed = JSON.parse(text);
  return Array.isArray(parsed) ? parsed : parsed.traceEvents;
}

/** Self time per event name on the renderer's main thread over the whole trace (children
 * subtracted), largest first, as printable lines. */
export function mainThreadSelfTimes(events: TraceEvent[], top = 25): string[] {
  const main = events.find((e) => e.ph === "M" && e.name === "thread_name" && e.args?.name === "CrRendererMain");
  if (!main) return ["no renderer main thread in the trace"];
  const spans = events
    .filter((e) => e.pid === main.pid && e.tid === main.tid && e.ph === "X" && e.dur)
    .sort((a, b) => a.ts - b.ts || b.dur! - a.dur!);
  const self = new Map<string, number>();
  const stack: TraceEvent[] = [];
  for (const e of spans) {
    while (stack.length && stack[stack.length - 1].ts + stack[stack.length - 1].dur! <= e.ts) stack.pop();
    const parent = stack[stack.length - 1];
    if (parent) self.set(parent.name, (self.get(parent.name) ?? 0) - e.dur!);
    self.set(e.name, (self.get(e.name) ?? 0) + e.dur!);
    stack.push(e);
  }
  return [...self.entries()]
    .filter(([, us]) => us >= 500)
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, us]) => `${(us / 1000).toFixed(1).padStart(7)} ms  ${name}`);
}
