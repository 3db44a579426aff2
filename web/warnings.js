// A tier's warnings, under the tiers table: stale backups (GET /api/v1/tiers
// "backup_warnings", docs/backups.md) and what the hosts' reports contradict
// ("site_warnings": an address in no host subnet, shared storage or a DR
// place missing on a host; docs/policy.md "What is refused").
import { h } from './dom.js';

export function tierWarnings(tiers) {
  const items = [];
  for (const t of tiers) {
    for (const [kind, list] of [['backup', t.backup_warnings], ['site', t.site_warnings]]) {
      for (const w of list || []) {
        items.push(h('li', { class: 'warn', dataset: { tier: t.name, kind } },
          h('strong', {}, `⚠ ${t.name}: `), w));
      }
    }
  }
  if (!items.length) return null;
  return h('ul', { class: 'tier-warnings', 'aria-label': 'Tier warnings' }, items);
}
