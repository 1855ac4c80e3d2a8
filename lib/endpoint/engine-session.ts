/**
 * One request's own session on the embedded engine. chdb lets many connections share the
 * data path of the engine that ingests, each with its own settings, current database and
 * streaming cursor; a request's SET, USE or `readonly` lives and dies with its session and
 * never reaches the processor's session or another request's.
 */
import type { ChdbQueryStream, RawInsertFormat, Session } from 'chdb';
import type { loadChdb } from '../chdb.js';

/** The chdb module (lib/chdb.ts loads it). */
export type ChdbModule = Awaited<ReturnType<typeof loadChdb>>;

/** A SQL string literal: inside quotes the parser gives meaning to `\` and `'` only. */
export function sqlString(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** A setting's value as SQL: numbers as they are, anything else as a string literal. */
function settingLiteral(v: string): string {
  return /^-?\d+(\.\d+)?$/.test(v) ? v : sqlString(v);
}

const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class EngineSession {
  private readonly s: Session;

  constructor(chdb: ChdbModule, path: string) {
    this.s = new chdb.Session(path);
  }

  /** The result of `sql` in `format`, whole (for small answers: guards, SHOW, EXPLAIN). */
  async bytes(sql: string, format: string, params?: Record<string, string>): Promise<Buffer> {
    const r = params ? await this.s.queryBindAsync(sql, params, { format }) : await this.s.queryAsync(sql, { format });
    const b = r.bytes();
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  }

  async text(sql: string, format = 'TSV'): Promise<string> {
    return (await this.bytes(sql, format)).toString('utf8');
  }

  /**
   * The result of a SELECT in chunks, fetched as the reader asks for them. No query
   * parameters: chdb binds them process-wide, and only its whole-result path serialises them.
   */
  stream(sql: string, format: string): ChdbQueryStream {
    return this.s.queryStream(sql, { format });
  }

  /** Apply settings (names checked; values as literals) to this session only. */
  async set(settings: Record<string, string>): Promise<void> {
    const names = Object.keys(settings);
    if (!names.length) return;
    for (const n of names) if (!SETTING_NAME.test(n)) throw new Error(`Code: 115. DB::Exception: Unknown setting ${JSON.stringify(n)}. (UNKNOWN_SETTING)`);
    await this.s.queryAsync(`SET ${names.map((n) => `${n} = ${settingLiteral(settings[n])}`).join(', ')}`);
  }

  async use(database: string): Promise<void> {
    await this.s.queryAsync(`USE ${database}`);
  }

  /** Rows in `format` handed to the engine as data, never as SQL text. */
  async insert(table: string, columns: string[] | undefined, data: Buffer, format: RawInsertFormat): Promise<{ rows: number; bytes: number }> {
    const r = await this.s.insert({ table, columns, values: data, format });
    return { rows: r.rowsWritten, bytes: r.bytesWritten };
  }

  close(): void {
    this.s.close();
  }
}
