// The P3 bench's page origin when frames go over a real socket (P3_TRANSPORT=socket, the
// default): an HTTP server that forwards every request to the nixdeck server, serves the
// vanilla page's files under /bench/, and answers `/ws` itself with a minimal WebSocket
// server (handshake and unmasked text frames, RFC 6455) that the bench writes its seeded
// stream to. The browser then receives frames as it would from a real server, instead of
// through Playwright's routing, which costs the page one `Runtime.evaluate` per frame (the
// routed "transport" page was 23 % busy doing nothing else; docs/BENCHMARKS.md, session 3).
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** Where the bench writes frames: the page's current `/ws` connection. */
export interface FrameSink {
  send(text: string): void;
}

/** One text frame, server to client (never masked). */
function textFrame(text: string): Buffer {
  const payload = Buffer.from(text, "utf8");
  const n = payload.length;
  let head: Buffer;
  if (n < 126) {
    head = Buffer.from([0x81, n]);
  } else if (n < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x81;
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x81;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

export class SocketOrigin {
  private server: http.Server | null = null;
  /** Upgraded sockets leave the HTTP server's bookkeeping; closed by `stop`. */
  private sockets = new Set<Socket>();
  /** The latest `/ws` connection and how many the page opened. */
  latest: FrameSink | null = null;
  connects = 0;

  constructor(
    private upstream: string,
    /** Files served under /bench/: path → [file, content type]. */
    private files: Record<string, [string, string]>,
    /** The first frame of every connection (a snapshot, as the real server sends). */
    private firstFrame: () => string,
  ) {}

  get base(): string {
    const a = this.server?.address() as AddressInfo | null;
    if (!a) throw new Error("SocketOrigin is not started");
    return `http://127.0.0.1:${a.port}`;
  }

  async start(port: number): Promise<void> {
    const up = new URL(this.upstream);
    const server = http.createServer((req, res) => {
      const file = this.files[new URL(req.url ?? "/", "http://x").pathname];
      if (file) {
        res.writeHead(200, { "content-type": file[1] });
        res.end(readFileSync(file[0]));
        return;
      }
      // Headers pass unchanged (Host included), so the server's same-origin checks see
      // this origin consistently.
      const forward = http.request(
        { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      forward.on("error", (e) => {
        res.writeHead(502, { "content-type": "text/plain" });
        res.end(`bench origin: ${e.message}`);
      });
      req.pipe(forward);
    });
    server.on("upgrade", (req, socket: Socket) => {
      const key = req.headers["sec-websocket-key"];
      if (new URL(req.url ?? "/", "http://x").pathname !== "/ws" || typeof key !== "string") {
        socket.destroy();
        return;
      }
      const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
      socket.setNoDelay(true);
      socket.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("data", () => {}); // the page sends nothing the bench needs
      socket.on("error", () => socket.destroy());
      const sink: FrameSink = {
        send: (text) => {
          if (!socket.destroyed) socket.write(textFrame(text));
        },
      };
      sink.send(this.firstFrame());
      this.latest = sink;
      this.connects++;
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
