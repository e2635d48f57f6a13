// A TCP proxy on 127.0.0.1 that a test can cut, stall or freeze, to make real network trouble:
// - cut(): every connection is destroyed (the client sees an abnormal close, 1006);
// - refuse(true): new connections are dropped at once (a server that cannot be reached);
// - stall(): stop reading from the server on existing connections, so its kernel buffers
//   and then its queues fill exactly as with a client that stopped reading; resume() undoes it;
// - freeze(): stop forwarding in both directions on existing connections (a dead link).
// Nothing is parsed: bytes are piped as they are.

import { connect as tcpConnect, createServer } from "node:net";

export async function startProxy(targetPort) {
  const links = new Set();
  let refusing = false;
  let accepted = 0;
  const server = createServer((client) => {
    accepted += 1;
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = tcpConnect(targetPort, "127.0.0.1");
    const link = { client, upstream };
    links.add(link);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      links.delete(link);
    };
    for (const socket of [client, upstream]) {
      socket.on("error", end);
      socket.on("close", end);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    /** Connections accepted so far (refused ones included). */
    get accepted() {
      return accepted;
    },
    get open() {
      return links.size;
    },
    cut() {
      for (const { client, upstream } of [...links]) {
        client.destroy();
        upstream.destroy();
      }
    },
    refuse(on) {
      refusing = on;
    },
    stall() {
      for (const { client, upstream } of links) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    resume() {
      for (const { client, upstream } of links) {
        upstream.pipe(client);
        client.pipe(upstream);
      }
    },
    freeze() {
      for (const { client, upstream } of links) {
        upstream.unpipe(client);
        client.unpipe(upstream);
        upstream.pause();
        client.pause();
      }
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
