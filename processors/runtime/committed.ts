/**
 * What a function has committed on a shard: the highest `_seq` per table and day partition.
 *
 * ClickHouse makes an insert atomic per partition only: a block whose rows span two days
 * becomes two parts, and a crash can land one without the other. Tracking the committed
 * sequence per day partition (and inserting one block per partition) keeps exactly-once
 * rows across that crash: a day that landed suppresses its re-read rows, a day that did not
 * gets them again.
 */
import type { ClickHouse } from '../../lib/clickhouse.js';
import { allReplicas } from '../../schemas/cluster-ddl.js';
import { PARTITION_COLUMN } from '../../schemas/partitions.js';
import type { Row } from './function.js';

/** Days since the epoch (UTC) of a row's partition column (nanoseconds in a decimal string). */
export function partitionDay(table: string, row: Row): number {
  const ns = String(row[PARTITION_COLUMN[table]]);
  return Math.floor(Number(ns.slice(0, -9) || '0') / 86_400);
}

export class CommittedSeqs {
  private readonly seqs = new Map<string, number>();

  /** True when anything was committed before (the lane resumes). */
  get any(): boolean {
    for (const v of this.seqs.values()) if (v > 0) return true;
    return false;
  }

  get(table: string, day: number): number {
    return this.seqs.get(`${table}|${day}`) ?? 0;
  }

  /** Rows of `table` for `day` up to `seq` are in ClickHouse. */
  note(table: string, day: number, seq: number): void {
    const key = `${table}|${day}`;
    if (seq > (this.seqs.get(key) ?? 0)) this.seqs.set(key, seq);
  }
}

/**
 * Where a resuming processor reads `table`: the table, or on a cluster every replica of it
 * (allReplicas: a row counts once one replica has it).
 */
export function resumeSource(ch: Pick<ClickHouse, 'database' | 'cluster'>, table: string): string {
  return ch.cluster === undefined ? `${ch.database}.${table}` : allReplicas(ch.database, table, ch.cluster);
}

/** Committed sequences of the functions (by `_fn`) on `shard` for `tables` of one stream; `signal` aborts the read. */
export async function readCommitted(ch: ClickHouse, tables: string[], streamId: string, shard: number, signal?: AbortSignal): Promise<Map<string, CommittedSeqs>> {
  const out = new Map<string, CommittedSeqs>();
  for (const table of tables) {
    const rs = await ch.client.query({
      query: `SELECT _fn, toUInt32(toDate(${PARTITION_COLUMN[table]})) AS day, max(_seq) AS seq
              FROM ${resumeSource(ch, table)} WHERE _stream = {stream:String} AND _shard = {shard:UInt16} GROUP BY _fn, day`,
      query_params: { stream: streamId, shard },
      format: 'JSONEachRow',
      abort_signal: signal,
    });
    for (const r of await rs.json<{ _fn: string; day: number; seq: string }>()) {
      let c = out.get(r._fn);
      if (!c) out.set(r._fn, (c = new CommittedSeqs()));
      c.note(table, Number(r.day), Number(r.seq));
    }
  }
  return out;
}
