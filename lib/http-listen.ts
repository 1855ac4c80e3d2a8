/**
 * The listening and closing netrig's HTTP servers share (the ClickHouse endpoint, the
 * metrics port, the page): a port in use is a PortInUseError naming what wanted it, and a
 * stop closes the connections still open instead of waiting for their keep-alive to end.
 */
import type { Server } from 'node:http';
import { PortInUseError } from './errors.js';

/** Listen on host:port (0 picks a port); resolves with the port listened on. `what` names the server in the error. */
export async function listen(server: Server, host: string, port: number, what: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new PortInUseError(port, what, { cause: err }) : err));
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return typeof addr === 'object' && addr ? addr.port : port;
}

/** Close the server and every connection it still has. */
export async function closeNow(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}
