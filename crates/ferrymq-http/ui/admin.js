// FerryMQ web UI: administration (users, virtual hosts, permissions, policies, limits).
// Administrator-only endpoints; the tab is hidden for other users and the API refuses
// them anyway (401).
'use strict';

const ADMIN_TABS = [['users', 'Users'], ['vhosts', 'Virtual hosts'], ['permissions', 'Permissions'], ['policies', 'Policies'], ['limits', 'Limits']];

function adminShell(main, current, body) {
  main.innerHTML = `<h1>Admin</h1><nav class="subnav">${ADMIN_TABS.map(([k, l]) => `<a href="#/admin/${k}"${k === current ? ' class="active"' : ''}>${esc(l)}</a>`).join('')}</nav>${body}`;
}

function delButton(path, label, what) {
  return `<button type="button" class="small danger del" data-path="${esc(path)}" data-what="${esc(what)}">${esc(label || 'Delete')}</button>`;
}

function bindDeletes(main, reload) {
  onClick(main, '.del', (d) => {
    if (confirm(`Delete ${d.what}?`)) act(`Deleted ${d.what}`, () => api('DELETE', d.path), reload);
  });
}

function userOptions(users) { return users.map((u) => `<option value="${esc(u.name)}">${esc(u.name)}</option>`).join(''); }

const ADMIN = {
  async users(main, seq) {
    adminShell(main, 'users', `<div id="a-list"></div>${section('Add or update a user', `<form id="a-add" class="grid-form">
      <label>Username <input name="name" id="user-name" required></label>
      <label>Password <input name="password" id="user-pass" type="password" autocomplete="new-password"></label>
      <label>Tags <input name="tags" id="user-tags" placeholder="administrator, monitoring, policymaker, management"></label>
      <button id="user-add">Add / update user</button></form>`)}`);
    const reload = async () => {
      const [users, perms] = await Promise.all([GET('/users'), GET('/permissions')]);
      if (seq !== UI.seq) return;
      $('#a-list').innerHTML = table(['Name', 'Tags', 'Can access virtual hosts', 'Has password', ''], users.map((u) => `<tr data-user="${esc(u.name)}"><td>${esc(u.name)}</td><td>${(u.tags || []).map((t) => `<span class="tag">${esc(t)}</span>`).join(' ')}</td><td>${esc(perms.filter((p) => p.user === u.name).map((p) => p.vhost).join(', ') || 'No access')}</td><td>${yes(u.password_hash)}</td><td>${delButton('/users/' + enc(u.name), 'Delete', `user ${u.name}`)}</td></tr>`));
    };
    await reload();
    bindDeletes(main, reload);
    onSubmit('#a-add', (v) => act(`User ${v.name} saved`, () => {
      const body = { tags: v.tags.split(',').map((t) => t.trim()).filter(Boolean) };
      if (v.password) body.password = v.password;
      return api('PUT', '/users/' + enc(v.name), body);
    }, reload));
  },

  async vhosts(main, seq) {
    adminShell(main, 'vhosts', `<div id="a-list"></div>${section('Add a virtual host', `<form id="a-add" class="grid-form">
      <label>Name <input name="name" required></label>
      <label>Description <input name="description"></label>
      <label>Tags <input name="tags"></label>
      <label>Default queue type <select name="default_queue_type"><option>classic</option><option>quorum</option></select></label>
      <button>Add virtual host</button></form>`)}`);
    const reload = async () => {
      const vs = await GET('/vhosts');
      if (seq !== UI.seq) return;
      $('#a-list').innerHTML = table(['Name', 'Description', 'Tags', 'Default queue type', 'Ready', 'Unacked', 'Total', ''], vs.map((v) => `<tr><td>${esc(v.name)}</td><td>${esc(v.description)}</td><td>${(v.tags || []).map((t) => `<span class="tag">${esc(t)}</span>`).join(' ')}</td><td>${esc(v.default_queue_type)}</td><td class="num">${fmtNum(v.messages_ready)}</td><td class="num">${fmtNum(v.messages_unacknowledged)}</td><td class="num">${fmtNum(v.messages)}</td><td>${delButton('/vhosts/' + enc(v.name), 'Delete', `virtual host ${v.name} and everything in it`)}</td></tr>`));
    };
    await reload();
    bindDeletes(main, async () => { await reload(); await loadVhosts(); });
    onSubmit('#a-add', (v) => act(`Virtual host ${v.name} added`, () => api('PUT', '/vhosts/' + enc(v.name), {
      description: v.description, tags: v.tags.split(',').map((t) => t.trim()).filter(Boolean), default_queue_type: v.default_queue_type,
    }), async () => { await reload(); await loadVhosts(); }));
  },

  async permissions(main, seq) {
    const users = await GET('/users?columns=name');
    adminShell(main, 'permissions', `<div id="a-list"></div><div id="a-topic"></div>${section('Set permissions', `<form id="a-add" class="grid-form">
      <label>User <select name="user">${userOptions(users)}</select></label>
      <label>Virtual host <select name="vhost">${vhostOptions(defaultVhost())}</select></label>
      <label>Configure regexp <input name="configure" value=".*"></label>
      <label>Write regexp <input name="write" value=".*"></label>
      <label>Read regexp <input name="read" value=".*"></label>
      <button>Set permission</button></form>`)}`);
    const reload = async () => {
      const [ps, tps] = await Promise.all([GET('/permissions'), GET('/topic-permissions')]);
      if (seq !== UI.seq) return;
      $('#a-list').innerHTML = section('Permissions', table(['User', 'Virtual host', 'Configure', 'Write', 'Read', ''], ps.map((p) => `<tr><td>${esc(p.user)}</td><td>${esc(p.vhost)}</td><td><code>${esc(p.configure)}</code></td><td><code>${esc(p.write)}</code></td><td><code>${esc(p.read)}</code></td><td>${delButton(`/permissions/${enc(p.vhost)}/${enc(p.user)}`, 'Clear', `permissions of ${p.user} in ${p.vhost}`)}</td></tr>`)));
      $('#a-topic').innerHTML = section('Topic permissions', table(['User', 'Virtual host', 'Exchange', 'Write', 'Read', ''], tps.map((p) => `<tr><td>${esc(p.user)}</td><td>${esc(p.vhost)}</td><td>${esc(p.exchange)}</td><td><code>${esc(p.write)}</code></td><td><code>${esc(p.read)}</code></td><td>${delButton(`/topic-permissions/${enc(p.vhost)}/${enc(p.user)}?exchange=${enc(p.exchange)}`, 'Clear', `topic permissions of ${p.user} in ${p.vhost}`)}</td></tr>`), 'No topic permissions'));
    };
    await reload();
    bindDeletes(main, reload);
    onSubmit('#a-add', (v) => act(`Permissions of ${v.user} set`, () => api('PUT', `/permissions/${enc(v.vhost)}/${enc(v.user)}`, { configure: v.configure, write: v.write, read: v.read }), reload));
  },

  async policies(main, seq) {
    adminShell(main, 'policies', `<div id="a-list"></div><div id="a-op"></div>${section('Add or update a policy', `<form id="a-add" class="grid-form">
      <label>Kind <select name="kind"><option value="policies">User policy</option><option value="operator-policies">Operator policy</option></select></label>
      <label>Virtual host <select name="vhost">${vhostOptions(defaultVhost())}</select></label>
      <label>Name <input name="name" required></label>
      <label>Pattern <input name="pattern" required placeholder="^orders\\."></label>
      <label>Apply to <select name="apply_to"><option>queues</option><option>all</option><option>exchanges</option></select></label>
      <label>Priority <input name="priority" type="number" value="0"></label>
      <label class="wide">Definition (JSON) <textarea name="definition" rows="3" required placeholder='{"max-length": 10000, "overflow": "reject-publish"}'></textarea></label>
      <button>Save policy</button></form>`)}`);
    const rows = (ps, kind) => ps.map((p) => `<tr><td>${esc(p.vhost)}</td><td>${esc(p.name)}</td><td><code>${esc(p.pattern)}</code></td><td>${esc(p['apply-to'])}</td><td class="num">${fmtNum(p.priority)}</td><td><code>${json(p.definition)}</code></td><td>${delButton(`/${kind}/${enc(p.vhost)}/${enc(p.name)}`, 'Delete', `policy ${p.name}`)}</td></tr>`);
    const heads = ['Virtual host', 'Name', 'Pattern', 'Apply to', 'Priority', 'Definition', ''];
    const reload = async () => {
      const vpath = UI.vhost ? vhostPath(UI.vhost) : '';
      const [ps, ops] = await Promise.all([GET('/policies' + vpath), GET('/operator-policies' + vpath)]);
      if (seq !== UI.seq) return;
      $('#a-list').innerHTML = section('User policies', table(heads, rows(ps, 'policies'), 'No policies'));
      $('#a-op').innerHTML = section('Operator policies', table(heads, rows(ops, 'operator-policies'), 'No operator policies'));
    };
    await reload();
    bindDeletes(main, reload);
    onSubmit('#a-add', (v) => act(`Policy ${v.name} saved`, () => api('PUT', `/${v.kind}/${enc(v.vhost)}/${enc(v.name)}`, {
      pattern: v.pattern, 'apply-to': v.apply_to, priority: +v.priority, definition: parseJson(v.definition, 'definition'),
    }), reload));
  },

  async limits(main, seq) {
    const users = await GET('/users?columns=name');
    adminShell(main, 'limits', `<div id="a-list"></div><div id="a-user"></div>
      ${section('Set a virtual host limit', `<form id="a-add" class="grid-form">
        <label>Virtual host <select name="vhost">${vhostOptions(defaultVhost())}</select></label>
        <label>Limit <select name="limit"><option>max-connections</option><option>max-queues</option></select></label>
        <label>Value <input name="value" type="number" required></label>
        <button>Set limit</button></form>`)}
      ${section('Set a user limit', `<form id="a-add-user" class="grid-form">
        <label>User <select name="user">${userOptions(users)}</select></label>
        <label>Limit <select name="limit"><option>max-connections</option><option>max-channels</option></select></label>
        <label>Value <input name="value" type="number" required></label>
        <button>Set limit</button></form>`)}`);
    const reload = async () => {
      const [vl, ul] = await Promise.all([GET('/vhost-limits'), GET('/user-limits')]);
      if (seq !== UI.seq) return;
      const flat = (list, who) => list.flatMap((l) => Object.entries(l.value || {}).map(([k, val]) => [l[who], k, val]));
      $('#a-list').innerHTML = section('Virtual host limits', table(['Virtual host', 'Limit', 'Value', ''], flat(vl, 'vhost').map(([v, k, val]) => `<tr><td>${esc(v)}</td><td>${esc(k)}</td><td class="num">${fmtNum(val)}</td><td>${delButton(`/vhost-limits/${enc(v)}/${enc(k)}`, 'Clear', `${k} of ${v}`)}</td></tr>`), 'No limits'));
      $('#a-user').innerHTML = section('User limits', table(['User', 'Limit', 'Value', ''], flat(ul, 'user').map(([u, k, val]) => `<tr><td>${esc(u)}</td><td>${esc(k)}</td><td class="num">${fmtNum(val)}</td><td>${delButton(`/user-limits/${enc(u)}/${enc(k)}`, 'Clear', `${k} of ${u}`)}</td></tr>`), 'No limits'));
    };
    await reload();
    bindDeletes(main, reload);
    onSubmit('#a-add', (v) => act(`Limit ${v.limit} set`, () => api('PUT', `/vhost-limits/${enc(v.vhost)}/${enc(v.limit)}`, { value: +v.value }), reload));
    onSubmit('#a-add-user', (v) => act(`Limit ${v.limit} set`, () => api('PUT', `/user-limits/${enc(v.user)}/${enc(v.limit)}`, { value: +v.value }), reload));
  },
};

UI.pages.admin = {
  async show(main, [sub], seq) {
    const page = ADMIN[sub || 'users'];
    if (!page) { main.innerHTML = '<p class="error">No such page.</p>'; return; }
    await page(main, seq);
  },
};
