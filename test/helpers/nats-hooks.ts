/**
 * One nats-server for a whole test file: started before its first test, with a client
 * connection, and both closed after its last, however the tests end.
 */
import { after, before } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { startNatsServer, type NatsServerHandle } from './nats-server.js';

/** Register the file's hooks; `use` receives the server and connection once they run. */
export function natsServerForFile(use: (server: NatsServerHandle, nc: NatsConnection) => void): void {
  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    use(server, nc);
  });
  after(async () => {
    await nc?.close();
    await server?.cleanup();
  });
}
