/**
 * deploy/k8s, checked offline: the manifests render with `kubectl kustomize` from the files
 * deploy/k8s/make-secrets.sh writes; every object is valid against the Kubernetes API schemas
 * (kubernetes-models) with no field the API does not know; and they say what netrig's code
 * says — the edge's capabilities are edge/privileges.ts's, the NATS users' grants are
 * cli/nats-roles.ts's, every flag is one the CLI has and passes its own validation, edge and
 * processors agree on the raw stream, every file a flag names is in a mounted Secret or
 * ConfigMap. Then the NATS pods run for real: the rendered configuration, with each pod's
 * environment and volumes laid out in temporary directories, is accepted by nats-server, and
 * three servers form the TLS cluster in which the edge's credentials make the replicated raw
 * stream and a processor's read it. The local run changes only where things are: the pods'
 * mounts are directories here, and the servers listen on ports of 127.0.0.1 instead of
 * 4222/6222/8222 under their pod names.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { parseAllDocuments } from 'yaml';
import { DaemonSet, Deployment, StatefulSet, type IDaemonSet, type IDeployment, type IStatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Namespace, Secret, Service, type IContainer, type IPodSpec, type IService } from 'kubernetes-models/v1';
import { natsRoles } from '../../cli/nats-roles.js';
import { withPasswordFile } from '../../cli/endpoint-file.js';
import { edgeConfig, type EdgeInput } from '../../edge/config.js';
import { Cap, CAP_USES, KEPT_CAPS, type CapName } from '../../edge/privileges.js';
import { NatsAuthError } from '../../lib/errors.js';
import { metricsAccess } from '../../lib/metrics-server.js';
import { connectNats, isPermissionDenied, natsConnectOptions, type NatsClientInput } from '../../lib/nats.js';
import { ensureStream, replicasValue } from '../../lib/raw-stream.js';
import { killSync, onExit } from '../helpers/cleanup.js';
import { cleanupAll, pollUntil } from '../helpers/cleanup-all.js';
import { testLogger } from '../helpers/edge-run.js';
import { freePort, waitExit } from '../helpers/nats-server.js';
import { CLI, REPO_ROOT } from '../helpers/paths.js';

const K8S = join(REPO_ROOT, 'deploy/k8s');
const COMPONENT = 'components/kernel-before-5.11';
const log = testLogger('k8s-manifests');

/**
 * What the edge starts with, from edge/privileges.ts: every capability it names a use for,
 * but CAP_SYS_RESOURCE, which only kernels before 5.11 need (the component adds it).
 */
const START_CAPS = (Object.keys(Cap) as CapName[]).filter((c) => CAP_USES[c] !== 'not needed' && c !== 'SYS_RESOURCE');

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [field: string]: unknown;
}

/** The model (schema) of each kind the manifests hold. */
const MODELS: Record<string, { prototype: { validate(): void } }> = {
  'v1/Namespace': Namespace, 'v1/ConfigMap': ConfigMap, 'v1/Secret': Secret, 'v1/Service': Service,
  'apps/v1/DaemonSet': DaemonSet, 'apps/v1/Deployment': Deployment, 'apps/v1/StatefulSet': StatefulSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
};

/** A view of `value` that records the path of every own property read through it. */
function tracked(value: unknown, path: string, read: Set<string>): unknown {
  if (value === null || typeof value !== 'object') return value;
  const children = new Map<string, unknown>();
  return new Proxy(value, {
    get(target, key, receiver) {
      const v: unknown = Reflect.get(target, key, receiver);
      if (typeof key !== 'string' || !Object.hasOwn(target, key)) return v;
      read.add(`${path}/${key}`);
      if (!children.has(key)) children.set(key, tracked(v, `${path}/${key}`, read));
      return children.get(key);
    },
  });
}

function fieldPaths(value: unknown, path: string, out: string[] = []): string[] {
  if (value === null || typeof value !== 'object') return out;
  for (const [k, v] of Object.entries(value)) {
    out.push(`${path}/${k}`);
    fieldPaths(v, `${path}/${k}`, out);
  }
  return out;
}

/**
 * Validate `o` against its kind's schema (throws with ajv's messages) and return the fields
 * the schema never looked at: the compiled validators read every property they know, so an
 * unread one is unknown to the API (a typo such as `hostPId`, which the server would refuse
 * or drop).
 */
function unknownFields(o: K8sObject): string[] {
  const model = MODELS[`${o.apiVersion}/${o.kind}`];
  assert.ok(model, `no schema here for ${o.apiVersion} ${o.kind}`);
  const read = new Set<string>();
  const copy = structuredClone(o);
  // kubectl kustomize folds long base64 values over lines; the API server's decoder (Go's
  // encoding/base64) skips line breaks, the schema's "byte" format does not.
  if (o.kind === 'Secret') for (const [k, v] of Object.entries(copy.data as Record<string, string>)) (copy.data as Record<string, string>)[k] = v.replace(/\n/g, '');
  model.prototype.validate.call(tracked(copy, '', read));
  return fieldPaths(o, '').filter((p) => !read.has(p));
}

/** `kubectl args`; one line saying so when kubectl is missing. */
function kubectl(args: string[]): string {
  const r = spawnSync('kubectl', args, { encoding: 'utf8' });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    throw new Error('kubectl is not installed: this test renders deploy/k8s with `kubectl kustomize` (kubectl 1.27 or later, offline)');
  }
  if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

function render(dir: string): K8sObject[] {
  return parseAllDocuments(kubectl(['kustomize', dir])).map((d) => d.toJS() as K8sObject).filter(Boolean);
}

/** The flags `netrig <command> --help` lists. */
function cliFlags(command: string): Set<string> {
  const r = spawnSync(process.execPath, [CLI, command, '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `netrig ${command} --help: ${r.stderr}`);
  return new Set([...r.stdout.matchAll(/^\s+(?:-\w, )?(--[a-z0-9-]+)/gm)].map((m) => m[1]));
}

/** A pod of a workload, as the kubelet would run one of its containers here. */
interface PodRun {
  /** Environment of the container, every reference resolved. */
  env: Record<string, string>;
  /** `$(VAR)` expanded as the kubelet does; an unknown VAR fails the test. */
  expand(s: string): string;
  /** A path inside the container → where its volume's files lie here. */
  local(path: string): string;
}

/** Fields the downward API gives, with values for a pod `podName` on a made-up node. */
function fieldValue(fieldPath: string, podName: string): string {
  const fields: Record<string, string> = { 'metadata.name': podName, 'spec.nodeName': 'node-a', 'status.hostIP': '192.0.2.10' };
  assert.ok(fieldPath in fields, `downward API field ${fieldPath} not emulated`);
  return fields[fieldPath];
}

class Manifests {
  constructor(readonly objects: K8sObject[]) {}

  get<T>(kind: string, name: string): T {
    const o = this.objects.find((x) => x.kind === kind && x.metadata.name === name);
    assert.ok(o, `no ${kind} ${name} rendered`);
    return o as unknown as T;
  }

  all(kind: string): K8sObject[] {
    return this.objects.filter((o) => o.kind === kind);
  }

  /** Decoded data of a Secret, or data of a ConfigMap. */
  data(kind: 'Secret' | 'ConfigMap', name: string): Record<string, Buffer> {
    const o = this.get<{ data?: Record<string, string> }>(kind, name);
    const out: Record<string, Buffer> = {};
    for (const [k, v] of Object.entries(o.data ?? {})) out[k] = kind === 'Secret' ? Buffer.from(v, 'base64') : Buffer.from(v);
    return out;
  }

  /** Every workload's pod spec with its name. */
  pods(): { owner: string; spec: IPodSpec; claims: string[] }[] {
    return this.objects.filter((o) => ['DaemonSet', 'Deployment', 'StatefulSet'].includes(o.kind)).map((o) => {
      const w = o as unknown as IStatefulSet;
      return { owner: `${o.kind} ${o.metadata.name}`, spec: w.spec!.template.spec!, claims: (w.spec!.volumeClaimTemplates ?? []).map((c) => c.metadata!.name!) };
    });
  }

  /** Lay out the volumes of `container` of `pod` under `dir` and resolve its environment. */
  run(pod: { spec: IPodSpec; claims: string[] }, container: IContainer, podName: string, dir: string): PodRun {
    const env: Record<string, string> = {};
    const expand = (s: string) => s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
      assert.ok(name in env, `$(${name}) in container ${container.name} names no variable defined before it`);
      return env[name];
    });
    for (const e of container.env ?? []) {
      const from = e.valueFrom;
      if (from?.fieldRef) env[e.name] = fieldValue(from.fieldRef.fieldPath, podName);
      else if (from?.configMapKeyRef) env[e.name] = this.key('ConfigMap', from.configMapKeyRef.name!, from.configMapKeyRef.key).toString();
      else if (from?.secretKeyRef) env[e.name] = this.key('Secret', from.secretKeyRef.name!, from.secretKeyRef.key).toString();
      else env[e.name] = expand(e.value ?? '');
    }
    const mounts = (container.volumeMounts ?? []).map((m) => {
      const local = join(dir, m.name);
      mkdirSync(local, { recursive: true });
      const v = pod.spec.volumes?.find((x) => x.name === m.name);
      assert.ok(v || pod.claims.includes(m.name), `volume ${m.name} of container ${container.name} is not in its pod`);
      const files = v?.secret ? this.data('Secret', v.secret.secretName!) : v?.configMap ? this.data('ConfigMap', v.configMap.name!) : {};
      for (const [k, b] of Object.entries(files)) writeFileSync(join(local, k), b, { mode: 0o600 });
      return { at: m.mountPath, local };
    }).sort((a, b) => b.at.length - a.at.length);
    const local = (path: string) => {
      const m = mounts.find((x) => path === x.at || path.startsWith(`${x.at}/`));
      assert.ok(m, `${path} (container ${container.name}) is on no mounted volume`);
      return m.local + path.slice(m.at.length);
    };
    return { env, expand, local };
  }

  /** One key of a ConfigMap or Secret; fails naming what is missing. */
  key(kind: 'Secret' | 'ConfigMap', name: string, key: string): Buffer {
    const d = this.data(kind, name);
    assert.ok(key in d, `${kind} ${name} has no key ${key}`);
    return d[key];
  }
}

/** A netrig container's `--flag=value` arguments after its command, $(VAR)s expanded. */
function flagsOf(container: IContainer, run: PodRun): { command: string; flags: Map<string, string> } {
  const [command, ...rest] = container.args ?? [];
  const flags = new Map<string, string>();
  for (const a of rest) {
    const m = /^(--[a-z0-9-]+)=(.*)$/s.exec(a);
    assert.ok(m, `${container.name}: argument ${a} is not --flag=value (the form this check reads)`);
    flags.set(m[1], run.expand(m[2]));
  }
  return { command, flags };
}

/** `--nats-user` → natsUser: the keys commander gives the command's action. */
function optionsOf(flags: Map<string, string>): Record<string, string> {
  return Object.fromEntries([...flags].map(([f, v]) => [f.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()), v]));
}

/**
 * nats-server's configuration format, as much of it as a configuration holds: blocks, lists,
 * quoted and bare values (`$VAR` kept as written), `#` and `//` comments, `:`/`=`/nothing
 * between key and value, commas or newlines between entries.
 */
function parseNatsConf(text: string): Record<string, unknown> {
  let i = 0;
  const skip = (newlines: boolean) => {
    for (;;) {
      const c = text[i];
      if (c === '#' || (c === '/' && text[i + 1] === '/')) while (i < text.length && text[i] !== '\n') i++;
      else if (c === ' ' || c === '\t' || c === '\r' || c === ',' || c === ';' || (newlines && c === '\n')) i++;
      else return;
    }
  };
  const bare = (stop: RegExp) => {
    const start = i;
    while (i < text.length && !stop.test(text[i])) i++;
    return text.slice(start, i);
  };
  const value = (): unknown => {
    const c = text[i];
    if (c === '{') {
      i++;
      return object('}');
    }
    if (c === '[') {
      i++;
      const list: unknown[] = [];
      for (skip(true); text[i] !== ']'; skip(true)) {
        assert.ok(i < text.length, 'nats.conf: a list is not closed');
        list.push(value());
      }
      i++;
      return list;
    }
    if (c === '"') {
      const end = text.indexOf('"', i + 1);
      const s = JSON.parse(text.slice(i, end + 1)) as string;
      i = end + 1;
      return s;
    }
    return bare(/[\s,;\]}]/);
  };
  const object = (close: string | null): Record<string, unknown> => {
    const o: Record<string, unknown> = {};
    for (skip(true); close === null ? i < text.length : text[i] !== close; skip(true)) {
      assert.ok(i < text.length, 'nats.conf: a block is not closed');
      const key = text[i] === '"' ? (value() as string) : bare(/[\s:={]/);
      skip(false);
      if (text[i] === ':' || text[i] === '=') i++;
      skip(false);
      o[key] = value();
    }
    i++;
    return o;
  };
  return object(null);
}

/** A role's grants as nats.conf gives them (`publish: [...]` or `publish: { allow: [...] }`). */
function confGrants(user: Record<string, unknown>): { publish?: string[]; subscribe?: string[] } {
  const perms = user.permissions as Record<string, unknown> | undefined;
  if (!perms) return {};
  const allow = (p: unknown) => (Array.isArray(p) ? (p as string[]) : ((p as { allow?: string[] } | undefined)?.allow));
  const out: { publish?: string[]; subscribe?: string[] } = {};
  if (perms.publish) out.publish = allow(perms.publish);
  if (perms.subscribe) out.subscribe = allow(perms.subscribe);
  return out;
}

const sorted = (xs: readonly string[] | undefined) => (xs ? [...xs].sort() : xs);
const cluster = (conf: Record<string, unknown>) => conf.cluster as Record<string, unknown>;

describe('deploy/k8s: Kubernetes manifests', () => {
  let dir = '';
  let unregister = () => {};
  let m: Manifests;
  let withComponent: Manifests;
  let edgeDs: IDaemonSet;
  let edge: IContainer;
  let processorDeploy: IDeployment;
  let processor: IContainer;
  let nats: IStatefulSet;
  let natsContainer: IContainer;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), `netrig-k8s-${process.pid}-`));
    unregister = onExit(`k8s test dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    // The manifests without whatever secrets this checkout holds, then the script's own.
    cpSync(K8S, join(dir, 'k8s'), { recursive: true, filter: (src) => !src.startsWith(join(K8S, 'secrets') + '/') || src.endsWith('.gitignore') });
    const made = spawnSync(join(K8S, 'make-secrets.sh'), [join(dir, 'k8s/secrets')], { encoding: 'utf8', env: { ...process.env, CLICKHOUSE_PASSWORD: 'click house"pass' } });
    assert.equal(made.status, 0, `make-secrets.sh: ${made.stderr}`);
    m = new Manifests(render(join(dir, 'k8s')));
    mkdirSync(join(dir, 'overlay'));
    writeFileSync(join(dir, 'overlay/kustomization.yaml'), `resources: [../k8s]\ncomponents: [../k8s/${COMPONENT}]\n`);
    withComponent = new Manifests(render(join(dir, 'overlay')));
    edgeDs = m.get<IDaemonSet>('DaemonSet', 'netrig-edge');
    edge = edgeDs.spec!.template.spec!.containers[0];
    processorDeploy = m.get<IDeployment>('Deployment', 'netrig-processor');
    processor = processorDeploy.spec!.template.spec!.containers[0];
    nats = m.get<IStatefulSet>('StatefulSet', 'nats');
    natsContainer = nats.spec!.template.spec!.containers[0];
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
    unregister();
  });

  const podOf = (w: IDaemonSet | IDeployment | IStatefulSet) => ({ spec: w.spec!.template.spec!, claims: ((w as IStatefulSet).spec!.volumeClaimTemplates ?? []).map((c) => c.metadata!.name!) });

  test('render offline from make-secrets.sh\'s files; every object is valid for the API, with no field it does not know', () => {
    const kinds = m.objects.map((o) => o.kind).sort();
    assert.deepEqual(kinds, ['ConfigMap', 'ConfigMap', 'ConfigMap', 'DaemonSet', 'Deployment', 'Namespace', 'PodDisruptionBudget',
      'Secret', 'Secret', 'Secret', 'Secret', 'Service', 'StatefulSet']);
    for (const o of [...m.objects, ...withComponent.objects]) {
      assert.deepEqual(unknownFields(o), [], `${o.kind} ${o.metadata.name}: fields the API does not know`);
      if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'netrig', `${o.kind} ${o.metadata.name} in the netrig namespace`);
    }
    // The check itself: a misspelt field is found.
    const typo = structuredClone(edgeDs) as unknown as K8sObject & { spec: { template: { spec: Record<string, unknown> } } };
    typo.spec.template.spec.hostPId = true;
    assert.deepEqual(unknownFields(typo), ['/spec/template/spec/hostPId']);
    const ns = m.get<{ metadata: { labels: Record<string, string> } }>('Namespace', 'netrig');
    assert.equal(ns.metadata.labels['pod-security.kubernetes.io/enforce'], 'privileged', 'the edge is admitted by Pod Security');
  });

  test('every ConfigMap, Secret, key and volume a pod names is rendered; no Secret value is empty', () => {
    for (const pod of m.pods()) {
      for (const v of pod.spec.volumes ?? []) {
        if (v.secret) m.get('Secret', v.secret.secretName!);
        if (v.configMap) m.get('ConfigMap', v.configMap.name!);
      }
      for (const c of pod.spec.containers) {
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
          if (ref) m.key(e.valueFrom?.secretKeyRef ? 'Secret' : 'ConfigMap', ref.name!, ref.key);
        }
        for (const vm of c.volumeMounts ?? []) {
          assert.ok(pod.spec.volumes?.some((v) => v.name === vm.name) || pod.claims.includes(vm.name), `${pod.owner}: mount ${vm.name} has no volume`);
        }
      }
    }
    for (const s of m.all('Secret')) {
      for (const [k, v] of Object.entries(m.data('Secret', s.metadata.name))) assert.ok(v.length > 0, `Secret ${s.metadata.name} key ${k} is empty`);
    }
  });

  test('the edge: host pid and network, exactly the capabilities edge/privileges.ts names, tracefs and BTF read-only, no bpffs', () => {
    const pod = edgeDs.spec!.template.spec!;
    assert.equal(pod.hostPID, true, 'hostPID: the edge excludes itself by its host pid and reads other processes\' libssl');
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet', 'cluster DNS from the host network');
    const sc = edge.securityContext!;
    assert.notEqual(sc.privileged, true, 'not privileged');
    assert.deepEqual(sc.capabilities?.drop, ['ALL']);
    assert.deepEqual(sorted(sc.capabilities?.add), sorted(START_CAPS), 'added: what the edge starts with');
    for (const c of KEPT_CAPS) assert.ok(sc.capabilities?.add?.includes(c), `CAP_${c}, kept after the drop, is added`);
    assert.equal(sc.runAsUser, 0, 'starts as root: the drop to --run-as is the edge\'s own');
    const component = withComponent.get<IDaemonSet>('DaemonSet', 'netrig-edge').spec!.template.spec!.containers[0];
    assert.deepEqual(sorted(component.securityContext?.capabilities?.add), sorted([...START_CAPS, 'SYS_RESOURCE']), `${COMPONENT} adds CAP_SYS_RESOURCE`);

    const hostPaths = Object.fromEntries((pod.volumes ?? []).filter((v) => v.hostPath).map((v) => [v.name, v.hostPath!.path]));
    assert.deepEqual(Object.values(hostPaths).sort(), ['/sys/kernel/btf', '/sys/kernel/tracing'], 'host paths: tracefs and BTF only (no bpffs: nothing is pinned)');
    for (const at of ['/sys/kernel/tracing', '/sys/kernel/btf']) {
      const mount = edge.volumeMounts?.find((vm) => vm.mountPath === at);
      assert.ok(mount && hostPaths[mount.name] === at, `${at} mounted from the host's`);
      assert.equal(mount.readOnly, true, `${at} read-only`);
    }
  });

  test('every container has requests and limits, a read-only root, no added capability but the edge\'s, no API token', () => {
    for (const pod of m.pods()) {
      assert.equal(pod.spec.automountServiceAccountToken, false, `${pod.owner}: no service account token`);
      for (const c of pod.spec.containers) {
        for (const r of ['cpu', 'memory']) {
          assert.ok(c.resources?.requests?.[r], `${pod.owner} ${c.name}: requests.${r}`);
          assert.ok(c.resources?.limits?.[r], `${pod.owner} ${c.name}: limits.${r}`);
        }
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${pod.owner} ${c.name}: read-only root`);
        assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${pod.owner} ${c.name}: drops every capability`);
        if (c !== edge) {
          assert.equal(c.securityContext?.capabilities?.add, undefined, `${pod.owner} ${c.name}: adds none`);
          assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${pod.owner} ${c.name}: no privilege escalation`);
        }
      }
    }
  });

  test('netrig containers use only flags the CLI has, with values its own validation accepts, and files that are mounted', () => {
    for (const [c, pod, expected] of [[edge, podOf(edgeDs), 'edge'], [processor, podOf(processorDeploy), 'process']] as const) {
      const run = m.run(pod, c, `${c.name}-0`, join(dir, `run-${c.name}`));
      const { command, flags } = flagsOf(c, run);
      assert.equal(command, expected);
      const known = cliFlags(command);
      for (const f of flags.keys()) assert.ok(known.has(f), `netrig ${command} has no flag ${f}`);
      for (const f of [...flags.keys()].filter((k) => k.endsWith('-file') || k === '--nats-tls-ca')) flags.set(f, run.local(flags.get(f)!));
      const o = optionsOf(flags);
      // The connect options the command builds: its role, and the password the NATS servers hold for it.
      const role = command === 'edge' ? 'edge' : 'processor';
      const conn = natsConnectOptions(o as NatsClientInput, 'check');
      assert.equal(conn.user, role);
      assert.equal(conn.pass, m.key('Secret', natsSecretName(), `${role}-password`).toString(), `${role}'s password is the one nats-server has`);
      assert.ok(readFileSync(o.natsTlsCa, 'utf8').includes('BEGIN CERTIFICATE'), 'the CA certificate is mounted');
      const metrics = metricsAccess(o, o.metricsPort);
      assert.ok(metrics.credentials, `${role} metrics require the password`);
      if (command === 'edge') {
        const cfg = edgeConfig(o as EdgeInput);
        assert.equal(cfg.edge.node, 'node-a', '--node is the node\'s name');
        assert.ok(cfg.runAs && cfg.runAs !== 'root', 'the edge drops to an unprivileged user');
        assert.equal(cfg.edge.stream.replicas, 3);
      } else {
        const cm = m.data('ConfigMap', processor.env!.find((e) => e.name === 'NETRIG_CLICKHOUSE_URL')!.valueFrom!.configMapKeyRef!.name!);
        assert.equal(o.clickhouseUrl, cm['clickhouse-url'].toString());
        assert.equal(withPasswordFile(o).clickhousePassword, 'click house"pass', 'the ClickHouse password from its Secret');
        assert.equal(replicasValue(o.streamReplicas), 3);
      }
    }
  });

  function natsSecretName(): string {
    return natsContainer.env!.find((e) => e.name === 'NETRIG_EDGE_PASSWORD')!.valueFrom!.secretKeyRef!.name!;
  }

  test('edge and processors agree on the raw stream and talk to every NATS server; netrig\'s own ports are not captured', () => {
    const run = (c: IContainer, w: IDaemonSet | IDeployment) => flagsOf(c, m.run(podOf(w), c, 'x', join(dir, `agree-${c.name}`))).flags;
    const e = run(edge, edgeDs);
    const p = run(processor, processorDeploy);
    for (const f of ['--stream', '--subject-prefix', '--shards', '--stream-replicas', '--nats']) assert.equal(p.get(f), e.get(f), `${f} the same for edge and processors`);
    assert.ok((processorDeploy.spec!.replicas ?? 1) >= 2, 'two processors at least: one takes over from the other');
    const replicas = nats.spec!.replicas!;
    assert.equal(Number(e.get('--stream-replicas')), replicas, 'the raw stream on every NATS server');
    const service = m.get<IService>('Service', nats.spec!.serviceName!);
    assert.equal(service.spec!.clusterIP, 'None');
    assert.equal(service.spec!.publishNotReadyAddresses, true, 'servers find each other before they are ready');
    const names = Array.from({ length: replicas }, (_, i) => `nats-${i}.${service.metadata!.name}`);
    assert.deepEqual(e.get('--nats')!.split(','), names.map((n) => `nats://${n}:4222`), 'clients know every server');
    const conf = parseNatsConf(m.key('ConfigMap', natsConfigName(), 'nats.conf').toString());
    assert.deepEqual(cluster(conf).routes, names.map((n) => `tls://${n}:6222`), 'a route to every server');
    const excluded = e.get('--exclude-ports')!.split(',').map(Number);
    for (const port of natsContainer.ports!) assert.ok(excluded.includes(port.containerPort), `edge excludes NATS's ${port.name} port ${port.containerPort}`);
    const chUrl = new URL(m.data('ConfigMap', edge.env!.find((x) => x.name === 'NETRIG_EXCLUDE_PORTS')!.valueFrom!.configMapKeyRef!.name!)['clickhouse-url'].toString());
    assert.ok(excluded.includes(Number(chUrl.port || (chUrl.protocol === 'https:' ? 443 : 80))), 'edge excludes the ClickHouse port of the processors\' inserts');
  });

  function natsConfigName(): string {
    return nats.spec!.template.spec!.volumes!.find((v) => v.configMap)!.configMap!.name!;
  }

  test('the NATS users have exactly the grants netrig up gives each role (cli/nats-roles.ts)', () => {
    const e = flagsOf(edge, m.run(podOf(edgeDs), edge, 'x', join(dir, 'grants'))).flags;
    const roles = natsRoles({ stream: e.get('--stream')!, subjectPrefix: e.get('--subject-prefix')! });
    const conf = parseNatsConf(m.key('ConfigMap', natsConfigName(), 'nats.conf').toString());
    const users = (conf.authorization as { users: Record<string, unknown>[] }).users;
    assert.deepEqual(users.map((u) => u.user).sort(), Object.keys(roles).sort(), 'one user per role');
    const env = new Set(natsContainer.env!.filter((x) => x.valueFrom?.secretKeyRef).map((x) => x.name));
    for (const u of users) {
      const role = u.user as keyof typeof roles;
      const grants = confGrants(u);
      assert.deepEqual(sorted(grants.publish), sorted(roles[role].publish), `${role}: publish`);
      assert.deepEqual(sorted(grants.subscribe), sorted(roles[role].subscribe), `${role}: subscribe`);
      const ref = /^\$([A-Z_]+)$/.exec(String(u.password));
      assert.ok(ref && env.has(ref[1]), `${role}'s password comes from a Secret through the environment`);
    }
    const js = conf.jetstream as Record<string, unknown>;
    assert.equal(js.cipher, 'chachapoly', 'the store is encrypted');
    assert.ok(conf.tls && (cluster(conf).tls as Record<string, unknown>).verify === 'true', 'clients on TLS, routes on mutual TLS');
  });

  describe('the NATS pods, run here', () => {
    const servers: { child: ChildProcess; port: number; monitor: number; log: string[] }[] = [];
    const conns: NatsConnection[] = [];

    after(() => cleanupAll(...conns.map((nc) => () => nc.close()), ...servers.map((s) => async () => {
      s.child.kill('SIGKILL');
      await waitExit(s.child, 5000);
    })));

    /** Pod `i` of the StatefulSet: volumes under the test dir, the config's paths pointed there. */
    function natsPod(i: number): { config: string; env: Record<string, string> } {
      const run = m.run(podOf(nats), natsContainer, `nats-${i}`, join(dir, `nats-${i}`));
      const args = natsContainer.args!;
      const config = run.local(args[args.indexOf('--config') + 1]);
      let text = readFileSync(config, 'utf8');
      for (const vm of natsContainer.volumeMounts!) text = text.replaceAll(vm.mountPath, run.local(vm.mountPath));
      writeFileSync(config, text);
      return { config, env: run.env };
    }

    test('nats-server accepts the configuration with the pod\'s environment', () => {
      const pod = natsPod(0);
      assert.equal(pod.env.CLUSTER_ADVERTISE, 'nats-0.nats:6222');
      const r = spawnSync('nats-server', ['-t', '-c', pod.config], { encoding: 'utf8', env: { PATH: process.env.PATH, ...pod.env } });
      assert.ok(!r.error, `nats-server: ${r.error?.message} (scripts/setup.sh installs it)`);
      assert.equal(r.status, 0, `nats-server -t: ${r.stderr}${r.stdout}`);
    });

    test('three servers form the TLS cluster; the edge makes the replicated raw stream, a processor reads it', async () => {
      const replicas = nats.spec!.replicas!;
      const ports = await Promise.all(Array.from({ length: replicas }, async () => ({ client: await freePort(), route: await freePort(), monitor: await freePort() })));
      const routes = ports.map((p) => `tls://127.0.0.1:${p.route}`).join(',');
      for (let i = 0; i < replicas; i++) {
        const pod = natsPod(i);
        const env = { PATH: process.env.PATH, ...pod.env, CLUSTER_ADVERTISE: `127.0.0.1:${ports[i].route}` };
        const child = spawn('nats-server', ['-c', pod.config, '-a', '127.0.0.1', '-p', String(ports[i].client), '-m', String(ports[i].monitor),
          '--cluster', `nats://127.0.0.1:${ports[i].route}`, '--routes', routes], { env, stdio: ['ignore', 'pipe', 'pipe'] });
        const unregisterKill = onExit(`nats-server ${child.pid}`, () => killSync(child.pid));
        child.once('exit', unregisterKill);
        const s = { child, port: ports[i].client, monitor: ports[i].monitor, log: [] as string[] };
        for (const out of [child.stdout!, child.stderr!]) {
          out.on('data', (b: Buffer) => {
            s.log.push(...b.toString().split('\n').filter(Boolean));
            s.log.splice(0, s.log.length - 50);
          });
        }
        servers.push(s);
      }
      const logs = () => servers.map((s, i) => `nats-${i}:\n${s.log.slice(-15).join('\n')}`).join('\n');
      const healthy = await pollUntil(async () => {
        const r = await Promise.all(servers.map((s) => fetch(`http://127.0.0.1:${s.monitor}/healthz`).then((x) => x.ok, () => false)));
        return r.every(Boolean);
      }, 30_000, 250);
      assert.ok(healthy, `the cluster is healthy (JetStream has a leader):\n${logs()}`);

      const local = servers.map((s) => `nats://127.0.0.1:${s.port}`).join(',');
      const client = (c: IContainer, w: IDaemonSet | IDeployment) => {
        const run = m.run(podOf(w), c, 'x', join(dir, `client-${c.name}`));
        const o = optionsOf(flagsOf(c, run).flags);
        return { ...o, nats: local, natsPasswordFile: run.local(o.natsPasswordFile), natsTlsCa: run.local(o.natsTlsCa), metricsPasswordFile: run.local(o.metricsPasswordFile) };
      };
      const edgeIn = client(edge, edgeDs);
      const procIn = client(processor, processorDeploy);
      await assert.rejects(connectNats({ ...edgeIn, natsPasswordFile: procIn.natsPasswordFile }, 'wrong', log), NatsAuthError, 'another role\'s password is refused');

      const enc = await connectNats(edgeIn, 'k8s-edge', log);
      conns.push(enc);
      const settings = edgeConfig(edgeIn as EdgeInput).edge.stream;
      const info = await ensureStream(enc, settings, log);
      assert.equal(info.config.num_replicas, replicas);
      assert.equal(info.cluster?.replicas?.length, replicas - 1, `the raw stream on every server:\n${logs()}`);
      const subject = `${settings.subjectPrefix}.default.node-a.0`;
      await jetstream(enc).publish(subject, 'envelope', { msgID: 'node-a.run.1' });
      await assert.rejects((await jetstreamManager(enc)).streams.delete(settings.name), isPermissionDenied, 'the edge cannot delete the raw stream');

      const pnc = await connectNats(procIn, 'k8s-processor', log);
      conns.push(pnc);
      const jsm = await jetstreamManager(pnc);
      await jsm.consumers.add(settings.name, { durable_name: 'k8s_check', filter_subject: `${settings.subjectPrefix}.*.*.0`, ack_policy: AckPolicy.Explicit });
      const msg = await (await jetstream(pnc).consumers.get(settings.name, 'k8s_check')).next({ expires: 5000 });
      assert.equal(msg?.string(), 'envelope', 'the processor reads what the edge published');
      msg!.ack();
      await assert.rejects(jetstream(pnc).publish(subject, 'forged'), isPermissionDenied, 'a processor cannot publish raw envelopes');
    });
  });
});
