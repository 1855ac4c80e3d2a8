/**
 * The `path_template` rule (processors/l7/path-template.ts): each case a target and the
 * template it becomes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pathTemplate } from '../../processors/l7/path-template.js';

const CASES: [target: string, template: string][] = [
  ['/', '/'],
  ['/users/42', '/users/{id}'],
  ['/users/42/orders/7?expand=items', '/users/{id}/orders/{id}'],
  ['/users/42/', '/users/{id}/'],
  ['/t/up1234x1?t=***', '/t/{id}'],
  ['/status/404', '/status/{id}'],
  ['/prices/-1', '/prices/{id}'],
  ['/rates/3.14', '/rates/{id}'],
  ['/days/2024-01-02/summary', '/days/{id}/summary'],
  ['/releases/1.2.3', '/releases/1.2.3'],
  ['/objects/6f1c2a9e-4b7d-4c1e-9a3f-0d2b8e5c7a11', '/objects/{id}'],
  ['/blobs/0123456789abcdef0123', '/blobs/{id}'],
  ['/sessions/a8Fq20xZ', '/sessions/{id}'],
  ['/users/usr_01HV3K9Q2Z', '/users/{id}'],
  ['/api/v2/items', '/api/v2/items'],
  ['/api2/items', '/api2/items'],
  ['/index2.html', '/index2.html'],
  ['/static/app.3f2a9c1b.js', '/static/app.3f2a9c1b.js'],
  ['/helloworld.Greeter/SayHello', '/helloworld.Greeter/SayHello'],
  ['/a/b#frag', '/a/b'],
  ['/search?q=***#***', '/search'],
  ['http://example.com/users/42?x=1', '/users/{id}'],
  ['http://example.com', 'http://example.com'],
  ['*', '*'],
  ['example.com:443', 'example.com:443'],
  ['', ''],
  ['/a%2Fb/12', '/a%2Fb/{id}'],
  ['/1/2/3/4/5/6/7/8/9/10', '/{id}/{id}/{id}/{id}/{id}/{id}/{id}/{id}/…'],
  [`/${'x'.repeat(300)}`, '/…'],
  [`/words/${'y'.repeat(150)}/${'z'.repeat(60)}`, `/words/${'y'.repeat(150)}/…`],
];

test('each target becomes its template', () => {
  for (const [target, template] of CASES) assert.equal(pathTemplate(target), template, JSON.stringify(target));
});

test('one endpoint is one value: the ids of 10,000 distinct requests make one template', () => {
  const templates = new Set<string>();
  for (let i = 0; i < 10_000; i++) templates.add(pathTemplate(`/users/${i}/orders/${(i * 7919).toString(16).padStart(16, '0')}?page=${i}`));
  assert.deepEqual([...templates], ['/users/{id}/orders/{id}']);
});
