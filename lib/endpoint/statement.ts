/**
 * What a request's SQL is, decided by the engine's own parser, and whether its credential
 * may run it. The query is first formatted by the engine (`formatQuerySingleLine`): that
 * refuses anything but one statement and gives its canonical text, free of comments and
 * with keywords and quoting normalised. That canonical text is what gets checked (its
 * `EXPLAIN AST`: the statement kind, every function and table function it calls) and what
 * runs, so no comment, quoting or case trick can make the checked and the run statement
 * differ.
 *
 * - reader: SELECT (WITH, UNION, INTERSECT/EXCEPT), SHOW, DESCRIBE, EXPLAIN of those, EXISTS
 *   (and, as a no-op, a migration's CREATE ... IF NOT EXISTS of what exists);
 * - writer: the same reads; INSERT INTO a table with its rows in the body (FORMAT among
 *   the text formats); and netrig's own migrations (schemas/migrations), for any database
 *   and retention, so a processor can create its database but nothing can be dropped or
 *   altered otherwise;
 * - nobody: table functions or functions that reach files, URLs or other servers, INTO
 *   OUTFILE, FROM INFILE, SET, USE; and nothing but a read by GET.
 */
import { readFileSync } from 'node:fs';
import type { RawInsertFormat } from 'chdb';
import { bootstrapStatements, migrationFiles, migrationStatements, MIGRATIONS_DIR } from '../../schemas/migrate.js';
import { AccessDeniedError, QuerySyntaxError, ReadonlyError } from './errors.js';
import { sqlString, type EngineSession } from './engine-session.js';

export type Role = 'reader' | 'writer';

export type Statement =
  /** A read; `stream` when the engine can stream it (SELECT), `format` when the SQL names one. */
  | { kind: 'read'; sql: string; stream: boolean; format: string | null }
  /** Rows of the body into `table`. */
  | { kind: 'insert'; table: string; columns: string[] | undefined; format: RawInsertFormat }
  /** One of netrig's migration statements. */
  | { kind: 'migration'; sql: string }
  /** A migration's CREATE ... IF NOT EXISTS of what exists already: nothing to run. */
  | { kind: 'nothing' };

export interface StatementRules {
  /** Lower-case names of functions and table functions nobody may call. */
  blockedFunctions: Set<string>;
  /** Canonical migration statements, database and retention left open. */
  migrations: RegExp[];
}

/**
 * Table functions that only generate or reshape values given in the query; every other one
 * the engine knows (file, url, remote, s3, mysql, executable, cluster, ...) is refused.
 */
const SAFE_TABLE_FUNCTIONS = ['numbers', 'numbers_mt', 'zeros', 'zeros_mt', 'generate_series', 'generateSeries', 'generateRandom', 'primes', 'values', 'null', 'view', 'format'];
/** Plain functions that read files the server can reach. */
const FILE_FUNCTIONS = ['file', 'catboostEvaluate'];

/** Root nodes of `EXPLAIN AST` that read. */
const READ_ROOT = /^(SelectWithUnionQuery|SelectIntersectExceptQuery|DescribeQuery|ShowTables|Show\w+Query|Exists\w*Query)$/;
const STREAMABLE_ROOT = /^(SelectWithUnionQuery|SelectIntersectExceptQuery)$/;
/** Formats chdb takes an insert body in as data (never spliced into SQL). */
const INSERT_FORMATS = new Set<string>(['JSONEachRow', 'JSONCompactEachRow', 'TSV', 'TabSeparated', 'TSVWithNames', 'TabSeparatedWithNames', 'CSV', 'CSVWithNames']);
/** A canonical insert of rows sent as data: table, optional columns, format and nothing else. */
const INSERT_DATA = /^INSERT INTO ((?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*)(?: \(([A-Za-z0-9_, ]+)\))? FORMAT ([A-Za-z]+)$/;
/** A canonical CREATE ... IF NOT EXISTS: the kind of object and its name. */
const CREATE_IF_MISSING = /^CREATE (DATABASE|TABLE) IF NOT EXISTS ((?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*)(?: |$)/;
/** Clauses that read or write the server's files; the canonical text spells them this way. */
const FILE_CLAUSE = /\bINTO OUTFILE\b|\bFROM INFILE\b/;

const SENTINEL_DB = 'netrig_endpoint_sentinel_db';
const SENTINEL_TTL = 987654;

/** The canonical text of `query`: one statement, or the engine's SYNTAX_ERROR. */
async function canonical(s: EngineSession, query: string): Promise<string> {
  const out = await s.text(`SELECT formatQuerySingleLine(${sqlString(query)}) AS q`, 'JSONEachRow');
  return (JSON.parse(out) as { q: string }).q.trim();
}

/** The rules, from what this engine knows (its table functions) and netrig's migrations. */
export async function loadRules(s: EngineSession): Promise<StatementRules> {
  const safe = new Set(SAFE_TABLE_FUNCTIONS.map((n) => n.toLowerCase()));
  const names = (await s.text('SELECT name FROM system.table_functions', 'TSVRaw')).split('\n').filter(Boolean);
  const blockedFunctions = new Set([...names.map((n) => n.toLowerCase()).filter((n) => !safe.has(n)), ...FILE_FUNCTIONS.map((n) => n.toLowerCase())]);
  const templates = [...bootstrapStatements(SENTINEL_DB)];
  for (const file of migrationFiles()) {
    templates.push(...migrationStatements(readFileSync(`${MIGRATIONS_DIR}/${file}`, 'utf8'), { database: SENTINEL_DB, ttlDays: SENTINEL_TTL }));
  }
  const migrations: RegExp[] = [];
  for (const t of templates) {
    const escaped = (await canonical(s, t)).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    let first = true;
    const pattern = escaped
      .replaceAll(SENTINEL_DB, () => (first ? ((first = false), '([A-Za-z_][A-Za-z0-9_]{0,62})') : '\\1'))
      .replaceAll(String(SENTINEL_TTL), '\\d{1,6}');
    migrations.push(new RegExp(`^${pattern}$`));
  }
  return { blockedFunctions, migrations };
}

/** Decide what `query` (with its `params`) is and whether `role` may run it (by `method`); throws the refusal. */
export async function classify(s: EngineSession, query: string, params: Record<string, string> | undefined, role: Role, method: string, rules: StatementRules): Promise<Statement> {
  let sql: string;
  try {
    sql = await canonical(s, query);
  } catch (err) {
    // The engine's own words, without the wrapping query the check ran it in.
    const m = /Syntax error[^:]*: [\s\S]*?(?=[.\s]*: In scope|\. \(SYNTAX_ERROR\)|$)/.exec((err as Error).message);
    throw new QuerySyntaxError(m ? m[0] : 'the query is not one statement the engine can parse');
  }
  if (!sql) throw new QuerySyntaxError('Empty query');
  if (FILE_CLAUSE.test(sql)) throw new AccessDeniedError('INTO OUTFILE and FROM INFILE are not allowed: the endpoint reads and writes no files');
  // With the request's parameters: the engine substitutes them before it explains.
  const lines = (await s.bytes(`EXPLAIN AST ${sql}`, 'TSVRaw', params)).toString('utf8').split('\n').filter((l) => l.trim());
  const nodes = lines.map((l) => l.trim().split(' '));
  for (const [type, name] of nodes) {
    if (type === 'Function' && rules.blockedFunctions.has(name.toLowerCase())) {
      throw new AccessDeniedError(`function ${name} is not allowed: it reaches files, URLs or other servers`);
    }
  }
  const root = nodes[0]?.[0] ?? '';
  const readRoot = root === 'Explain' ? READ_ROOT.test(nodes[1]?.[0] ?? '') : READ_ROOT.test(root);
  if (readRoot) {
    const stream = STREAMABLE_ROOT.test(root);
    return { kind: 'read', sql, stream, format: stream ? / FORMAT ([A-Za-z0-9_]+)$/.exec(sql)?.[1] ?? null : null };
  }
  if (method !== 'POST') throw new ReadonlyError('Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly. You should use method POST for modifying queries');
  if (role === 'reader') {
    // A client's start-up CREATE DATABASE IF NOT EXISTS (openClickHouse) for a database that
    // is there changes nothing: it needs no write right.
    const target = CREATE_IF_MISSING.exec(sql);
    if (target && rules.migrations.some((re) => re.test(sql)) && (await s.text(`EXISTS ${target[1]} ${target[2]}`)).trim() === '1') return { kind: 'nothing' };
    throw new ReadonlyError(`${root}: Cannot execute query in readonly mode: this credential only reads (SELECT, SHOW, DESCRIBE, EXPLAIN, EXISTS)`);
  }
  if (root === 'InsertQuery') {
    const m = INSERT_DATA.exec(sql);
    if (!m || nodes.some(([type]) => type === 'Function' || type === 'SelectWithUnionQuery')) {
      throw new AccessDeniedError('a writer inserts rows only: INSERT INTO table [(columns)] FORMAT format, with the rows as the request body');
    }
    if (!INSERT_FORMATS.has(m[3])) throw new AccessDeniedError(`insert format ${m[3]} is not supported; use one of ${[...INSERT_FORMATS].join(', ')}`);
    return { kind: 'insert', table: m[1], columns: m[2]?.split(', '), format: m[3] as RawInsertFormat };
  }
  if (rules.migrations.some((re) => re.test(sql))) return { kind: 'migration', sql };
  throw new AccessDeniedError(`${root}: Not enough privileges: the writer credential inserts rows and applies netrig's migrations, nothing else`);
}
