/**
 * The configuration file of the nats-server `netrig up` owns: listen address, JetStream with
 * its store encrypted at rest (ChaCha20-Poly1305), one user per role with the subjects it may
 * publish and subscribe to, and TLS when asked. Strings are JSON-quoted: in NATS's
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
    '# Written by netrig up at every start; edits are overwritten.',
    `server_name: ${q(c.serverName)}`,
    `host: ${q(c.host)}`,
    `port: ${c.port}`,
    'jetstream {',
    `  store_dir: ${q(c.storeDir)}`,
    '  cipher: chachapoly',
    `  key: ${q(c.encryptionKey)}`,
    '}',
    'authorization {',
    '  users: [',
    ...c.users.map((u) => `    { user: ${q(u.user)}, password: ${q(u.password)}${permissions(u)} }`),
    '  ]',
    '}',
  ];
  if (c.tls) lines.push('tls {', `  cert_file: ${q(c.tls.cert)}`, `  key_file: ${q(c.tls.key)}`, '  timeout: 2', '}');
  return `${lines.join('\n')}\n`;
}
