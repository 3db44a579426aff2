// The header's controller line (docs/ha.md): who leads and how many replicas
// there are, from GET /api/v1/controllers every few seconds. On a follower it
// links to the leader's dashboard: the browser does not carry the token over
// a 307 to another origin, so actions work only on the leader's page.
import * as api from './api.js';
import { h, replaceChildren } from './dom.js';

const kEveryMs = 5000;

function render(el, c) {
  const replicas = (c.replicas || []).length;
  const self = (c.replicas || []).find((r) => r.self);
  const leader = (c.replicas || []).find((r) => r.leader);
  const leads = self && self.leader;
  const label = c.leader == null ? 'no leader now' : `leader ${c.leader}`;
  replaceChildren(el, JSON.stringify([c.leader, replicas, leads, leader?.public_url]), () => [
    c.store === 'etcd' && !leads && leader
      ? h('a', { href: leader.public_url, title: 'this replica follows: open the leader' }, label)
      : label,
    ` · ${replicas} controller${replicas === 1 ? '' : 's'}`,
    c.store === 'etcd' && !leads ? ' (this one follows)' : '',
  ]);
  el.dataset.leader = leads ? 'self' : (c.leader == null ? 'none' : 'other');
  el.hidden = false;
}

export function startControllersLine(el) {
  const poll = async () => {
    try {
      render(el, await api.get('/api/v1/controllers'));
    } catch {
      el.hidden = true;  // the page's own banner says the controller is unreachable
    }
  };
  poll();
  setInterval(poll, kEveryMs);
}
