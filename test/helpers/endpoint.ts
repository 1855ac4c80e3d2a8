/**
 * The embedded engine of a test served on a ClickHouse endpoint on a free loopback port, as
 * `netrig up` serves it: processor children write through it as its writer.
 */
import { randomBytes } from 'node:crypto';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { logger } from '../../lib/logger.js';

/** Start an endpoint on `ch` whose writer has `writerPassword` (the reader: `readerPassword`, or a random one). */
export async function startTestEndpoint(ch: ClickHouse, writerPassword: string, readerPassword = randomBytes(12).toString('hex')): Promise<ClickHouseEndpoint> {
  const endpoint = new ClickHouseEndpoint({
    connection: ch.connection!, database: ch.database, reader: { user: 'default', password: readerPassword },
    writer: { user: WRITER_USER, password: writerPassword }, host: '127.0.0.1', port: 0, log: logger('test'),
  });
  await endpoint.start();
  return endpoint;
}
