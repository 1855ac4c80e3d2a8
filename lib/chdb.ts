/**
 * The embedded engine's modules, loaded on first use: importing chdb maps libchdb (about
 * 240 MiB of file-backed memory), which only the processes that hold the engine need — an
 * edge never does, though the one `netrig` command line reaches every module.
 */
import type * as Chdb from 'chdb';
import type * as ChdbConnection from 'chdb/connection';

let chdb: Promise<typeof Chdb> | undefined;
let connection: Promise<typeof ChdbConnection> | undefined;

/** chdb itself (sessions on a data path). */
export function loadChdb(): Promise<typeof Chdb> {
  return (chdb ??= import('chdb'));
}

/** chdb's connection for @clickhouse/client. */
export function loadChdbConnection(): Promise<typeof ChdbConnection> {
  return (connection ??= import('chdb/connection'));
}
