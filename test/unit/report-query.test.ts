/**
 * Reports made into queries (cli/report-query.ts): the window and every filter value travel
 * as query parameters, never in the SQL text; `--since` becomes a window ending now.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reportNamed, reportQuery, sinceWindow } from '../../cli/report-query.js';
import { REPORTS } from '../../cli/reports.js';

test('every report takes its window as parameters; filters are typed parameters, their values never in the SQL', () => {
  for (const [name, report] of Object.entries(REPORTS)) {
    const q = reportQuery(report, 'netrig', { fromMs: 1000, toMs: 2000 });
    assert.match(q.query, /\{from_ms:Int64\}/, name);
    assert.deepEqual(q.params, { from_ms: '1000', to_ms: '2000' }, name);
  }
  const evil = "/x' OR 1=1 --";
  const q = reportQuery(reportNamed('exchanges'), 'netrig', { fromMs: 0, toMs: 1 }, { client: '10.0.0.1', port: '8080', endpoint: evil });
  assert.deepEqual(q.params, { from_ms: '0', to_ms: '1', client: '::ffff:10.0.0.1', port: '8080', endpoint: evil });
  assert.ok(!q.query.includes(evil) && !q.query.includes('10.0.0.1'), 'values only as parameters');
  assert.match(q.query, /client_addr = \{client:IPv6\} AND server_port = \{port:UInt16\} AND path_template = \{endpoint:String\}/);
});

test('--since: the window that ends now, calendar months included; bad look-backs name the flag', () => {
  const now = Date.UTC(2026, 2, 31, 12);
  assert.deepEqual(sinceWindow('15 MINUTE', now), { fromMs: now - 15 * 60_000, toMs: now + 1 });
  assert.deepEqual(sinceWindow('2 day', now), { fromMs: now - 2 * 86_400_000, toMs: now + 1 });
  assert.equal(sinceWindow('1 MONTH', now).fromMs, Date.UTC(2026, 2, 3, 12), 'March 31 less a month, as Date counts it');
  assert.throws(() => sinceWindow('1; DROP TABLE x', now), /^ConfigError: since: expected e.g. "15 MINUTE"/);
  assert.throws(() => reportNamed('nope'), /unknown report 'nope'; known: top-endpoints/);
});
