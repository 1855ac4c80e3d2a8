/**
 * TLS for the nats-server `netrig up` owns: a self-signed CA made once with openssl (its
 * certificate is what clients trust: --nats-tls-ca), and a server certificate signed by it,
 * made again at every start for the names and addresses the server is reached at.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { PrerequisiteError } from './errors.js';
import { privateDir } from './secret-file.js';

export interface NatsTlsFiles {
  /** The CA certificate clients pass as --nats-tls-ca. */
  ca: string;
  cert: string;
  key: string;
}

const CA_DAYS = 3650;
const CERT_DAYS = 825;

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.error) throw new PrerequisiteError("openssl is not installed: install it (Debian: apt-get install openssl) to serve NATS over TLS", { cause: r.error });
  if (r.status !== 0) throw new PrerequisiteError(`openssl ${args[0]} failed: ${r.stderr.trim().slice(-500)}`);
}

/** The CA (made if missing) and a fresh server certificate for `names` (host names and IP addresses). */
export function ensureNatsTls(dir: string, names: string[]): NatsTlsFiles {
  privateDir(dir);
  const f = { ca: join(dir, 'ca.pem'), caKey: join(dir, 'ca.key'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key'), csr: join(dir, 'server.csr'), ext: join(dir, 'server.ext') };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  if (!existsSync(f.ca) || !existsSync(f.caKey)) {
    openssl(['req', '-x509', ...ec, '-keyout', f.caKey, '-out', f.ca, '-days', String(CA_DAYS), '-subj', '/CN=netrig NATS CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    chmodSync(f.caKey, 0o600);
    chmodSync(f.ca, 0o644);
  }
  const san = [...new Set(names)].map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  writeFileSync(f.ext, `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`, { mode: 0o600 });
  try {
    openssl(['req', ...ec, '-keyout', f.key, '-out', f.csr, '-subj', '/CN=netrig NATS']);
    chmodSync(f.key, 0o600);
    openssl(['x509', '-req', '-in', f.csr, '-CA', f.ca, '-CAkey', f.caKey, '-set_serial', `0x${Date.now().toString(16)}`, '-days', String(CERT_DAYS), '-extfile', f.ext, '-out', f.cert]);
  } finally {
    rmSync(f.csr, { force: true });
    rmSync(f.ext, { force: true });
  }
  return { ca: f.ca, cert: f.cert, key: f.key };
}
