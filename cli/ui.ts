/**
 * The page (ui/server.ts) as `netrig up` serves it beside its endpoint, and alone as
 * `netrig ui` over any ClickHouse: the reports' views, behind a reader's Basic auth.
 */
import type { ClickHouseClient } from '@clickhouse/client';
import type { Credentials } from '../lib/basic-auth.js';
import { intValue } from '../lib/config.js';
import { ConfigError } from '../lib/errors.js';
import { logger, type Logger } from '../lib/logger.js';
import { passwordOfFlags } from '../lib/secret-file.js';
import { PageServer } from '../ui/server.js';
import { withPasswordFile } from './endpoint-file.js';
import { openQueryTarget, type QueryTargetInput } from './query.js';

/** The page's port when none is given. */
export const DEFAULT_UI_PORT = 8124;

/** Start the page on 127.0.0.1 reading through `client`; it asks browsers for `credentials`. */
export async function servePage(client: ClickHouseClient, database: string, credentials: Credentials, port: string | number | undefined, log: Logger): Promise<PageServer> {
  const page = new PageServer({ client, database, credentials, host: '127.0.0.1', port: intValue('ui-port', port ?? DEFAULT_UI_PORT, 0, 65535), log });
  await page.start();
  log.info({ url: page.url, user: credentials.user }, 'page served (Basic auth: the ClickHouse endpoint reader\'s user and password)');
  return page;
}

export interface UiInput extends QueryTargetInput {
  clickhousePasswordFile?: string;
  uiPort?: string | number;
  /** The credential the page asks browsers for. */
  user?: string;
  password?: string;
  passwordFile?: string;
}

/** The page's own password: --password or --password-file, exactly one. */
function pagePassword(input: UiInput): string {
  const password = passwordOfFlags('password', input.password, input.passwordFile);
  if (password) return password;
  throw new ConfigError('password', 'the page needs a password for its users: --password-file FILE (e.g. <data dir>/endpoint/reader.password) or --password');
}

/** `netrig ui`: the page over the rows wherever `netrig query` finds them (--clickhouse-url: any ClickHouse). */
export async function runUi(input: UiInput): Promise<{ stop(): Promise<void> }> {
  const credentials = { user: input.user ?? 'default', password: pagePassword(input) };
  const target = await openQueryTarget(withPasswordFile(input));
  try {
    const page = await servePage(target.client, target.database, credentials, input.uiPort, logger('ui'));
    return {
      async stop() {
        await page.stop();
        await target.close();
      },
    };
  } catch (err) {
    await target.close();
    throw err;
  }
}
