// Definitions: download an export, upload an import.
import { get, post, seg } from '../api.js';
import { h, fill, panel, form, invalid, explain, notify, vhostOptions } from '../dom.js';
import { knownVhosts, reloadVhosts } from '../app.js';

export default {
  title: 'Definitions',
  async render(ctx) {
    const scopeOptions = [['', 'Whole broker'], ...vhostOptions(knownVhosts()).map(([v]) => [v, `Virtual host ${v}`])];
    const exportStatus = h('div');
    const scope = h('select', { id: 'export-scope', 'aria-label': 'What to export' }, scopeOptions.map(([v, l]) => h('option', { value: v }, l)));
    const download = h('button', {
      type: 'button', id: 'export-definitions',
      onclick: async () => {
        fill(exportStatus);
        try {
          const defs = await get(scope.value ? `/api/definitions/${seg(scope.value)}` : '/api/definitions');
          const blob = new Blob([JSON.stringify(defs, null, 2)], { type: 'application/json' });
          const a = h('a', { href: URL.createObjectURL(blob), download: `ferrymq-definitions${scope.value ? '-' + scope.value.replace(/[^\w.-]/g, '_') : ''}.json` });
          document.body.append(a);
          a.click();
          a.remove();
          const counts = ['vhosts', 'users', 'queues', 'exchanges', 'bindings', 'policies', 'parameters'].filter((k) => Array.isArray(defs[k])).map((k) => `${defs[k].length} ${k}`);
          fill(exportStatus, h('div', { class: 'form-ok', role: 'status' }, `Downloaded: ${counts.join(', ')}.`));
        } catch (e) {
          fill(exportStatus, h('div', { class: 'form-error', role: 'alert' }, explain(e)));
        }
      },
    }, 'Download definitions');
    const file = h('input', { type: 'file', accept: 'application/json,.json', id: 'import-file' });
    const importForm = form([
      { name: 'vhost', label: 'Into', type: 'select', options: scopeOptions, help: 'A whole-broker export goes into "Whole broker"; a single vhost\'s export can go into any vhost.' },
    ], async (v) => {
      const f = file.files && file.files[0];
      if (!f) invalid('Choose a definitions file (JSON) first.');
      let defs;
      try { defs = JSON.parse(await f.text()); } catch (e) { invalid(`${f.name} is not valid JSON: ${e.message}`); }
      if (defs === null || typeof defs !== 'object' || Array.isArray(defs)) invalid(`${f.name} is not a definitions document (expected a JSON object).`);
      await post(v.vhost ? `/api/definitions/${seg(v.vhost)}` : '/api/definitions', defs);
      await reloadVhosts();
      notify('Definitions imported.');
      return `Imported ${f.name}.`;
    }, { id: 'import-definitions', submitLabel: 'Upload definitions' });
    importForm.prepend(h('div', { class: 'row' }, h('label', { for: 'import-file' }, 'File'), file));
    fill(ctx.main, h('h1', {}, 'Definitions'),
      h('div', { class: 'grid two' },
        panel('Export', h('p', { class: 'help' }, 'Users (with password hashes), vhosts, permissions, queues, exchanges, bindings, policies and parameters, in RabbitMQ\'s format.'),
          h('div', { class: 'toolbar' }, scope, download), exportStatus),
        panel('Import', h('p', { class: 'help' }, 'RabbitMQ, LavinMQ and FerryMQ exports import unchanged. The whole file is checked before anything changes.'), importForm)));
  },
};
