/**
 * End to end: the edge (real eBPF, capture restricted to the test's namespaces) and a
 * processor (dns, tcp, losses) in this process, a real nats-server and the embedded
 * ClickHouse engine, while dig in one network namespace asks unbound in another: A with two
 * answers, AAAA, a name that does not exist (NXDOMAIN) over UDP, A and AAAA over TCP, and
 * a query to an address where UDP port 53 is silently dropped (no answer, no ICMP error).
 * `dns_queries` must then hold exactly those exchanges: one client row (dig) and one
 * server row (unbound) per answered query with the id, question, rcode, answers, transport
 * and both ends' addresses and ports as dig saw them, a latency above zero and (client
 * side) within what dig measured, and for the silent server a single client row, timed out
 * once node time passed the processor's DNS timeout. The OTLP exporter, reading the same
 * stream in lanes of its own, sends a span per query and role to a receiver decoding with
 * OpenTelemetry's protobuf definitions: dig's and unbound's in one trace, with the question,
 * the rcode and the rows' latency.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { dnsFunction } from '../../processors/dns/index.js';
import { lossesFunction } from '../../processors/losses/index.js';
import { Registry } from 'prom-client';
import { logger } from '../../lib/logger.js';
import { startOtlpExporter } from '../../processors/otlp/index.js';
import type { Processor } from '../../processors/runtime/processor.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, execWithPid, runOk, type Host, type HostPair } from '../helpers/netns.js';
import { drainProcessor, removeClickHouseData, rows, startEdgeProcessor, waitFor } from '../helpers/processor-run.js';
import { startUnbound, type UnboundHandle } from '../helpers/unbound.js';
import { distinctSpans, startOtlpReceiver, type DecodedSpan, type OtlpReceiver } from '../helpers/otlp-receiver.js';

const ZONE = 'netrig.test.';
const NAME = 'www.netrig.test';
const MISSING = 'missing.netrig.test';
const A_RECORDS = ['192.0.2.10', '192.0.2.11'];
const AAAA_RECORDS = ['2001:db8::10'];
/**
 * dig -u prints its query time in whole microseconds (truncated), read from the precise
 * clock (without -u, dig 9.18 reads a coarse clock that may lag by a jiffy): the real time
 * is below this much more.
 */
const DIG_TIME_SLACK_US = 1;
/** The processor's DNS timeout (processors/dns/matcher.ts DEFAULT_QUERY_TIMEOUT_NS) is 15 s of node time. */
const TIMEOUT_ROW_WAIT_MS = 40_000;
/**
 * comm of dig's rows: BIND 9.18's dig does its socket I/O on a network-manager thread
 * (isc-net-0000, isc-net-0001, ...: one per core, picked per socket), whose name is what
 * the kernel records; 'dig' should it ever do the I/O on its main thread.
 */
const isDigComm = (comm: string) => comm === 'dig' || /^isc-net-\d{4}$/.test(comm);

/** One dig query as dig saw it. */
interface Dig {
  pid: number;
  /** Source port it was bound to (-b addr#port). */
  port: number;
  server: string;
  transport: 'udp' | 'tcp';
  qname: string;
  qtype: 'A' | 'AAAA';
  /** Query id from the message dig sent (+qr). */
  id: number;
  /** null when no answer came. */
  rcode: number | null;
  /** Answer values of the answer section, in order. */
  answers: string[];
  /** ";; Query time:" in µs (dig -u); null when no answer came. */
  queryTimeUs: number | null;
}

/** A row as JSONEachRow gives it (64-bit integers as strings). */
interface DnsRow {
  region: string;
  node: string;
  conn_id: string;
  pid: number;
  comm: string;
  role: 'client' | 'server';
  client_addr: string;
  client_port: number;
  server_addr: string;
  server_port: number;
  transport: string;
  query_id: number;
  qname: string;
  qtype: string;
  rcode: number;
  answers: string[];
  answer_count: number;
  latency_ns: string;
  timed_out: number;
  truncated: number;
  retries: number;
}

const RCODES: Record<string, number> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };

for (const capturePath of CAPTURE_PATHS) describe(`dns_queries rows: dig against unbound over UDP and TCP, and a silent server (capture path: ${capturePath})`, () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let unbound: UnboundHandle | undefined;
  let edge: EdgeRun | undefined;
  let ch: ClickHouse | undefined;
  let nc: NatsConnection | undefined;
  let processor: Processor | undefined;
  let receiver: OtlpReceiver | undefined;
  let exporter: Processor | undefined;
  let client: Host;
  let server: Host;
  /** An address of the server namespace where UDP port 53 is dropped without a trace. */
  let silentAddr = '';
  let nextPort = 40_001;
  /** Every query made so far: the table may hold nothing else. */
  const digs: Dig[] = [];

  before(async () => {
    nats = await startNatsServer();
    hosts = await createHostPair();
    client = hosts.client;
    server = hosts.server;
    silentAddr = `10.77.${hosts.subnet}.3`;
    await runOk('ip', ['-n', server.ns, 'addr', 'add', `${silentAddr}/24`, 'dev', server.ifname]);
    // Dropped at the input hook, before any socket lookup: no ICMP port unreachable comes back.
    await runOk('ip', ['netns', 'exec', server.ns, 'nft', '-f', '-'], {
      input: `table inet netrig_silent {
        chain input {
          type filter hook input priority 0; policy accept;
          ip daddr ${silentAddr} udp dport 53 drop
        }
      }\n`,
    });
    unbound = await startUnbound(server, {
      zones: { [ZONE]: [...A_RECORDS.map((a) => `${NAME}. A ${a}`), ...AAAA_RECORDS.map((a) => `${NAME}. AAAA ${a}`)] },
    });
    edge = await startEdge({ nats: nats.url, netns: [client.netnsIno(), server.netnsIno()], input: { capturePath } });
    ({ ch, nc, processor } = await startEdgeProcessor(nats.url, edge, [dnsFunction, tcpFunction, lossesFunction], 'dns_rows'));
    receiver = await startOtlpReceiver();
    exporter = await startOtlpExporter({
      input: { otlpEndpoint: receiver.url }, nc, ch, log: logger('test'), registry: new Registry(), maxSeries: 5000,
      stream: edge.stream, subjectPrefix: edge.subjectPrefix, flushIntervalMs: 100, ttlDays: 30,
      leases: { ttlMs: 10_000, shardCount: edge.config.edge.shards, member: { id: `dns-otlp-${process.pid}-${capturePath}`, host: 'test', pid: process.pid, functions: [] } },
    });
  });

  after(() => cleanupAll(
    () => exporter?.stop(),
    () => receiver?.close(),
    () => processor?.stop(),
    () => nc?.close(),
    () => ch?.close(),
    () => edge?.stop(),
    () => unbound?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
    () => removeClickHouseData(),
  ));

  /** One dig query from the client namespace, from a source port of its own. */
  async function dig(qname: string, qtype: 'A' | 'AAAA', o: { tcp?: boolean; server?: string; timeS?: number } = {}): Promise<Dig> {
    const port = nextPort++;
    const srv = o.server ?? server.addr;
    const args = ['-u', '-b', `${client.addr}#${port}`, `@${srv}`, '+qr', '+tries=1', `+time=${o.timeS ?? 5}`, ...(o.tcp ? ['+tcp'] : []), qname, qtype];
    const r = await execWithPid(client, 'dig', args, { timeoutMs: 30_000 });
    const out = r.stdout;
    const headers = [...out.matchAll(/->>HEADER<<- opcode: QUERY, status: (\w+), id: (\d+)/g)];
    assert.ok(headers.length >= 1, `dig printed the query it sent (+qr): ${out}${r.stderr}`);
    const id = Number(headers[0][2]);
    const answered = /;; Got answer:/.test(out);
    let rcode: number | null = null;
    let queryTimeUs: number | null = null;
    const answers: string[] = [];
    if (answered) {
      assert.equal(r.code, 0, `dig succeeded: ${out}${r.stderr}`);
      assert.equal(headers.length, 2, `the query and its answer: ${out}`);
      assert.equal(Number(headers[1][2]), id, 'the answer carries the query id');
      rcode = RCODES[headers[1][1]];
      assert.ok(rcode !== undefined, `known status ${headers[1][1]}`);
      const time = /;; Query time: (\d+) usec/.exec(out);
      assert.ok(time, `dig printed its query time in µs: ${out}`);
      queryTimeUs = Number(time[1]);
      const server = /;; SERVER: (\S+)#53\(\S+\) \((UDP|TCP)\)/.exec(out);
      assert.ok(server, `dig named the server and transport: ${out}`);
      assert.deepEqual([server[1], server[2]], [srv, o.tcp ? 'TCP' : 'UDP']);
      const section = /;; ANSWER SECTION:\n([\s\S]*?)\n\n/.exec(out);
      for (const line of section ? section[1].split('\n') : []) answers.push(line.split(/\s+/)[4]);
    } else {
      assert.notEqual(r.code, 0, `dig gave up: ${out}`);
      assert.match(out, /timed out/, `dig timed out (no ICMP error): ${out}`);
    }
    const d: Dig = { pid: r.pid, port, server: srv, transport: o.tcp ? 'tcp' : 'udp', qname, qtype, id, rcode, answers, queryTimeUs };
    digs.push(d);
    return d;
  }

  async function rowsOf(d: Dig): Promise<DnsRow[]> {
    return rows<DnsRow>(ch!, `SELECT region, node, toString(conn_id) AS conn_id, pid, comm, role, client_addr, client_port,
        server_addr, server_port, transport, query_id, qname, qtype, rcode, answers, answer_count, latency_ns, timed_out, truncated, retries
      FROM ${ch!.database}.dns_queries
      WHERE client_addr = toIPv6('::ffff:${client.addr}') AND client_port = ${d.port} ORDER BY role`);
  }

  /** Wait until `n` rows are in the table and every message on the stream now is processed. */
  async function settle(n: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(`${n} dns_queries rows`, async () => {
      const r = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${ch!.database}.dns_queries`);
      return Number(r[0].n) >= n;
    }, timeoutMs);
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
  }

  /** The columns both rows of an answered query share, and the client row's. */
  function expected(d: Dig, role: 'client' | 'server'): Omit<DnsRow, 'conn_id' | 'pid' | 'comm' | 'latency_ns'> {
    return {
      region: edge!.config.edge.region,
      node: edge!.node,
      role,
      client_addr: `::ffff:${client.addr}`,
      client_port: d.port,
      server_addr: `::ffff:${d.server}`,
      server_port: 53,
      transport: d.transport,
      query_id: d.id,
      qname: d.qname,
      qtype: d.qtype,
      rcode: d.rcode ?? -1,
      answers: d.answers,
      answer_count: d.answers.length,
      timed_out: d.rcode === null ? 1 : 0,
      truncated: 0,
      retries: 0,
    };
  }

  /** Exactly one client row (dig) and one server row (unbound) for an answered query. */
  async function checkAnswered(d: Dig): Promise<{ client: DnsRow; server: DnsRow }> {
    const all = await rowsOf(d);
    const what = `${d.transport} ${d.qtype} ${d.qname} from port ${d.port}`;
    assert.deepEqual(all.map((r) => r.role), ['client', 'server'], `${what}: one row per end: ${JSON.stringify(all, null, 1)}`);
    const [c, s] = all;
    for (const r of all) {
      const { conn_id, pid, comm, latency_ns, ...rest } = r;
      assert.deepEqual(rest, expected(d, r.role), `${what}: ${r.role} row`);
      assert.ok(Number(latency_ns) > 0, `${what}: ${r.role} latency ${latency_ns} ns above zero`);
    }
    assert.equal(c.pid, d.pid, `${what}: the client row names dig's pid`);
    assert.ok(isDigComm(c.comm), `${what}: the client row names dig's network thread, not ${c.comm}`);
    assert.equal(s.pid, unbound!.pid, `${what}: the server row names unbound's pid`);
    assert.equal(s.comm, 'unbound', `${what}: the server row names unbound`);
    // dig's clock starts before its send and stops after its receive: the kernel's interval is inside.
    const limit = (d.queryTimeUs! + DIG_TIME_SLACK_US) * 1e3;
    assert.ok(Number(c.latency_ns) <= limit, `${what}: client latency ${c.latency_ns} ns within dig's ${d.queryTimeUs} µs (+${DIG_TIME_SLACK_US} µs rounding)`);
    assert.notEqual(c.conn_id, s.conn_id, `${what}: dig's and unbound's sockets have their own conn_id`);
    return { client: c, server: s };
  }

  let silent: Dig;

  test('a query to a silent server: dig gives up (its timed-out row comes later)', async () => {
    silent = await dig(NAME, 'A', { server: silentAddr, timeS: 2 });
    assert.equal(silent.rcode, null);
  });

  const udpServerConns = new Set<string>();

  test('UDP: A with two answers, AAAA, and NXDOMAIN for a missing name', async () => {
    const a = await dig(NAME, 'A');
    const aaaa = await dig(NAME, 'AAAA');
    const missing = await dig(MISSING, 'A');
    assert.deepEqual([a.rcode, aaaa.rcode, missing.rcode], [0, 0, 3]);
    assert.deepEqual([...a.answers].sort(), A_RECORDS, 'both A records came');
    assert.deepEqual(aaaa.answers, AAAA_RECORDS);
    assert.deepEqual(missing.answers, []);
    // The silent query's row is not due yet; these three are.
    await settle(6);
    for (const d of [a, aaaa, missing]) {
      const { client: c, server: s } = await checkAnswered(d);
      udpServerConns.add(s.conn_id);
      assert.ok(c.conn_id);
    }
    // unbound answers every UDP client from one unconnected socket: the datagram's peer is
    // the client, so one conn_id serves all three exchanges.
    assert.equal(udpServerConns.size, 1, 'unbound\'s one UDP socket');
  });

  test('TCP: A and AAAA over +tcp', async () => {
    const a = await dig(NAME, 'A', { tcp: true });
    const aaaa = await dig(NAME, 'AAAA', { tcp: true });
    assert.deepEqual([a.rcode, aaaa.rcode], [0, 0]);
    assert.deepEqual([...a.answers].sort(), A_RECORDS);
    assert.deepEqual(aaaa.answers, AAAA_RECORDS);
    await settle(10);
    const serverConns = new Set<string>();
    for (const d of [a, aaaa]) serverConns.add((await checkAnswered(d)).server.conn_id);
    assert.equal(serverConns.size, 2, 'each TCP query had its own accepted connection');
    for (const id of serverConns) assert.ok(!udpServerConns.has(id), 'TCP connections are not the UDP socket');
  });

  test('the silent server: one client row, timed out, no server row', async () => {
    // The timeout is node time: heartbeats keep envelope time moving until it passes.
    await settle(11, TIMEOUT_ROW_WAIT_MS);
    const all = await rowsOf(silent);
    assert.equal(all.length, 1, `one row for the silent query: ${JSON.stringify(all, null, 1)}`);
    const { conn_id, pid, comm, latency_ns, ...rest } = all[0];
    assert.deepEqual(rest, expected(silent, 'client'), 'the timed-out client row');
    assert.equal(rest.rcode, -1);
    assert.equal(latency_ns, '0', 'no response, no latency');
    assert.equal(pid, silent.pid, 'the row names dig\'s pid');
    assert.ok(isDigComm(comm), `the row names dig's network thread, not ${comm}`);
    assert.ok(conn_id);
  });

  test('the table holds nothing else: exactly the queries above', async () => {
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
    const answered = digs.filter((d) => d.rcode !== null).length;
    const got = await rows<{ role: string; transport: string; n: string; timed_out: string; ports: string }>(ch!, `
      SELECT role, transport, count() AS n, sum(timed_out) AS timed_out, toString(groupArray(client_port)) AS ports
      FROM ${ch!.database}.dns_queries GROUP BY role, transport ORDER BY role, transport`);
    const count = (transport: string, answeredOnly: boolean) =>
      digs.filter((d) => d.transport === transport && (!answeredOnly || d.rcode !== null)).length;
    assert.deepEqual(got.map((r) => [r.role, r.transport, Number(r.n), Number(r.timed_out)]), [
      ['client', 'tcp', count('tcp', false), 0],
      ['client', 'udp', count('udp', false), 1],
      ['server', 'tcp', count('tcp', true), 0],
      ['server', 'udp', count('udp', true), 0],
    ], `rows per role and transport (ports ${JSON.stringify(got.map((r) => r.ports))}; ${answered} answered of ${digs.length})`);
    const losses = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${ch!.database}.capture_losses`);
    assert.equal(losses[0].n, '0', 'nothing was lost on the way');
  });

  test('OTLP: a span per query and role, dig\'s and unbound\'s in one trace, with the rows\' question, rcode and latency', async () => {
    const answered = digs.filter((d) => d.rcode !== null);
    const dnsSpans = () => distinctSpans(receiver!.spans).filter((s) => s.attributes['dns.question.name'] === NAME || s.attributes['dns.question.name'] === MISSING);
    await waitFor('a span per query and role', () => dnsSpans().length >= digs.length + answered.length, 30_000, () => `${dnsSpans().length} of ${digs.length + answered.length}`);
    const spans = dnsSpans();
    assert.equal(spans.length, digs.length + answered.length, 'a span per query and role, no more');
    const of = (d: Dig, kind: string): DecodedSpan[] => spans.filter((s) => s.kind === kind && s.attributes['dns.question.name'] === d.qname && s.name === `DNS ${d.qtype}`
      && s.attributes['network.transport'] === d.transport && s.attributes['server.address'] === d.server);
    for (const d of digs) {
      const what = `${d.transport} ${d.qtype} ${d.qname} @${d.server}`;
      const rowsByRole = Object.fromEntries((await rowsOf(d)).map((r) => [r.role, r]));
      const [c] = of(d, 'SPAN_KIND_CLIENT');
      assert.equal(of(d, 'SPAN_KIND_CLIENT').length, 1, `${what}: one client span`);
      assert.equal(c.resource['process.pid'], d.pid, `${what}: the client span's process is dig`);
      assert.equal(BigInt(c.endTimeUnixNano) - BigInt(c.startTimeUnixNano), BigInt(rowsByRole.client.latency_ns), `${what}: the client row's latency`);
      if (d.rcode === null) {
        assert.equal(c.attributes['error.type'], 'timeout', `${what}: timed out`);
        assert.equal(of(d, 'SPAN_KIND_SERVER').length, 0, `${what}: no server span`);
        continue;
      }
      const [s] = of(d, 'SPAN_KIND_SERVER');
      assert.equal(of(d, 'SPAN_KIND_SERVER').length, 1, `${what}: one server span`);
      assert.equal(s.resource['service.name'], 'unbound');
      assert.equal(s.traceId, c.traceId, `${what}: dig's and unbound's spans in one trace`);
      assert.equal(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano), BigInt(rowsByRole.server.latency_ns), `${what}: the server row's latency`);
      for (const span of [c, s]) {
        assert.equal(span.attributes['netrig.dns.rcode'], Object.keys(RCODES).find((k) => RCODES[k] === d.rcode), `${what}: the rcode`);
        assert.equal(span.attributes['error.type'], d.rcode ? 'NXDOMAIN' : undefined, `${what}: NXDOMAIN is an error, NOERROR is not`);
        assert.deepEqual([...((span.attributes['dns.answers'] as string[] | undefined) ?? [])].sort(), [...d.answers].sort(), `${what}: the answers`);
      }
    }
  });
});
