/**
 * The configuration file of the nats-server `netrig up` (and `netrig nats`) owns: listen address, JetStream with
 * its store encrypted at rest (ChaCha20-Poly1305), one user per role with the subjects it may
 * publish and subscribe to, TLS when asked, and for fan-in a JetStream domain and leaf nodes. Strings are JSON-quoted: in NATS's
 * configuration format a quoted `$` is literal, so `$JS.API...` subjects are not variables.
 */

/** Subjects a role may use; an absent list allows every subject. */
export interface NatsGrants {
  publish?: string[];
  subscribe?: string[];
}

export interface NatsUser extends NatsGrants {
  user: string;
  password: string;
}

export interface NatsServerConfig {
  serverName: string;
  host: string;
  /** -1: a free port, chosen by the server. */
  port: number;
  storeDir: string;
  /** The JetStream store's encryption key. */
  encryptionKey: string;
  users: NatsUser[];
  tls?: { cert: string; key: string };
  /** JetStream domain: a region's own, so a hub reaches it as `$JS.<domain>.API`. */
  domain?: string;
  /** A hub: leaf nodes (regions) connect to this port with this user and password, with `tls` when set. */
  leafListen?: { port: number; user: string; password: string };
  /** A region: joins its hub as a leaf node (URL with user and password; the hub's CA when it speaks TLS). */
  leafRemote?: { url: string; tlsCa?: string };
}

const q = (s: string) => JSON.stringify(s);
const list = (xs: string[]) => `[${xs.map(q).join(', ')}]`;

function permissions(g: NatsGrants): string {
  const parts: string[] = [];
  if (g.publish) parts.push(`publish: { allow: ${list(g.publish)} }`);
  if (g.subscribe) parts.push(`subscribe: { allow: ${list(g.subscribe)} }`);
  return parts.length ? `, permissions: { ${parts.join(', ')} }` : '';
}

/** The configuration text. */
export function renderNatsConfig(c: NatsServerConfig): string {
  const lines = [
    '# Written by netrig at every start; edits are overwritten.',
    `server_name: ${q(c.serverName)}`,
    `host: ${q(c.host)}`,
    `port: ${c.port}`,
    'jetstream {',
    `  store_dir: ${q(c.storeDir)}`,
    '  cipher: chachapoly',
    `  key: ${q(c.encryptionKey)}`,
    ...(c.domain ? [`  domain: ${q(c.domain)}`] : []),
    '}',
    'authorization {',
    '  users: [',
    ...c.users.map((u) => `    { user: ${q(u.user)}, password: ${q(u.password)}${permissions(u)} }`),
    '  ]',
    '}',
  ];
  if (c.tls) lines.push('tls {', `  cert_file: ${q(c.tls.cert)}`, `  key_file: ${q(c.tls.key)}`, '  timeout: 2', '}');
  if (c.leafListen) {
    lines.push('leafnodes {', `  host: ${q(c.host)}`, `  port: ${c.leafListen.port}`,
      `  authorization { user: ${q(c.leafListen.user)}, password: ${q(c.leafListen.password)} }`);
    if (c.tls) lines.push(`  tls { cert_file: ${q(c.tls.cert)}, key_file: ${q(c.tls.key)}, timeout: 2 }`);
    lines.push('}');
  }
  if (c.leafRemote) {
    const tls = c.leafRemote.tlsCa ? `, tls: { ca_file: ${q(c.leafRemote.tlsCa)} }` : '';
    lines.push('leafnodes {', `  remotes: [ { url: ${q(c.leafRemote.url)}${tls} } ]`, '}');
  }
  return `${lines.join('\n')}\n`;
}
