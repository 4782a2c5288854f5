// FerryMQ web UI: Kafka topics and consumer groups (FerryMQ's /api/kafka endpoints).
// The group lag chart is sampled by the page every 5 s (the API answers the current lag;
// the history lives in the browser tab).
'use strict';

const topicColumns = [
  { label: 'Virtual host', sort: 'vhost', render: (t) => esc(t.vhost) },
  { label: 'Topic', sort: 'name', render: (t) => link(`#/topic/${enc(t.vhost)}/${enc(t.name)}`, t.name) },
  { label: 'Partitions', sort: 'partitions', cls: 'num', render: (t) => fmtNum(t.partitions) },
  { label: 'Messages', sort: 'messages', cls: 'num', render: (t) => fmtNum(t.messages) },
  { label: 'Size', sort: 'size_bytes', cls: 'num', render: (t) => fmtBytes(t.size_bytes) },
  { label: 'Configs', render: (t) => `<code>${json(t.configs)}</code>` },
];

UI.pages.topics = {
  async show(main) {
    const spec = { id: 'topics', columns: topicColumns, cols: 'name,vhost,partitions,messages,size_bytes,configs', path: (v) => '/kafka/topics' + (v ? vhostPath(v) : '') };
    main.innerHTML = `<h1>Kafka topics</h1>
      <p class="muted">Topics of the virtual hosts Kafka clients have used (a vhost's Kafka side opens on first use).</p>
      ${listShell(spec)}
      ${section('Create a topic', `<form id="add-topic" class="grid-form">
        <label>Virtual host <select name="vhost">${vhostOptions(defaultVhost())}</select></label>
        <label>Name <input name="name" required></label>
        <label>Partitions <input name="partitions" type="number" min="1" value="1"></label>
        <label class="wide">Configs (JSON) <textarea name="configs" rows="2" placeholder='{"retention.ms": "86400000"}'></textarea></label>
        <button>Create topic</button></form>`)}`;
    await bindList(spec);
    every(() => refreshList(spec));
    onSubmit('#add-topic', (v) => act(`Topic ${v.name} created`, () => api('PUT', `/kafka/topics/${enc(v.vhost)}/${enc(v.name)}`, {
      partitions: +v.partitions, configs: parseJson(v.configs, 'configs'),
    }), () => refreshList(spec)));
  },
};

UI.pages.topic = {
  tab: 'topics',
  async show(main, [vhost, name], seq) {
    const base = `/kafka/topics/${enc(vhost)}/${enc(name)}`;
    const render = (t) => `
      ${kv([['Topic id', esc(t.topic_id)], ['Partitions', fmtNum(t.partitions)], ['Messages', fmtNum(t.messages)], ['Size', fmtBytes(t.size_bytes)],
        ['Configs', Object.keys(t.configs || {}).length ? `<code>${json(t.configs)}</code>` : '<span class="muted">broker defaults</span>']])}
      ${section('Partitions', table(['Partition', 'Log start offset', 'Log end offset', 'High watermark', 'Messages', 'Size'], (t.partition_details || []).map((p) => `<tr><td class="num">${fmtNum(p.partition)}</td><td class="num">${fmtNum(p.log_start_offset)}</td><td class="num">${fmtNum(p.log_end_offset)}</td><td class="num">${fmtNum(p.high_watermark)}</td><td class="num">${fmtNum(p.messages)}</td><td class="num">${fmtBytes(p.size_bytes)}</td></tr>`)))}`;
    const t = await GET(base);
    if (seq !== UI.seq) return;
    main.innerHTML = `<h1>Topic <span class="name">${esc(t.name)}</span> <span class="muted">in ${esc(vhost)}</span></h1>
      <div id="t-body">${render(t)}</div>
      ${section('Add partitions', `<form id="t-grow" class="inline"><label>Partition count <input name="partitions" type="number" min="${t.partitions}" value="${t.partitions}"></label> <button>Apply</button></form>`)}
      ${section('Delete this topic', '<button id="t-delete" class="danger">Delete topic</button>')}`;
    const refresh = async () => { const t2 = await GET(base); if (seq === UI.seq) $('#t-body').innerHTML = render(t2); };
    every(() => refresh().catch(() => {}));
    onSubmit('#t-grow', (v) => act('Partitions updated', () => api('PUT', base, { partitions: +v.partitions }), refresh));
    $('#t-delete').addEventListener('click', () => { if (confirm(`Delete topic ${name} and all its messages?`)) act(`Topic ${name} deleted`, () => api('DELETE', base), () => { location.hash = '#/topics'; }); });
  },
};

const groupColumns = [
  { label: 'Virtual host', sort: 'vhost', render: (g) => esc(g.vhost) },
  { label: 'Group', sort: 'name', render: (g) => link(`#/group/${enc(g.vhost)}/${enc(g.name)}`, g.name) },
  { label: 'State', sort: 'state', render: (g) => `<span class="state state-${esc(g.state)}">${esc(g.state)}</span>` },
  { label: 'Members', cls: 'num', render: (g) => fmtNum((g.members || []).length) },
  { label: 'Topics', render: (g) => esc([...new Set((g.offsets || []).map((o) => o.topic))].join(', ')) },
  { label: 'Lag', sort: 'lag', cls: 'num lag', render: (g) => { record(`lag:${g.vhost}\u0000${g.name}`, g.lag || 0); return fmtNum(g.lag); } },
];

UI.pages.groups = {
  async show(main) {
    const spec = { id: 'groups', columns: groupColumns, path: (v) => '/kafka/groups' + (v ? vhostPath(v) : '') };
    main.innerHTML = `<h1>Kafka consumer groups</h1>${listShell(spec)}`;
    await bindList(spec);
    every(() => refreshList(spec));
  },
};

UI.pages.group = {
  tab: 'groups',
  async show(main, [vhost, name], seq) {
    const base = `/kafka/groups/${enc(vhost)}/${enc(name)}`;
    main.innerHTML = `<h1>Consumer group <span class="name">${esc(name)}</span> <span class="muted">in ${esc(vhost)}</span></h1>
      <div class="cards" id="g-cards"></div>
      ${section('Lag over time', '<div id="g-chart"></div>')}
      ${section('Committed offsets and lag per partition', '<div id="g-offsets"></div>')}
      ${section('Members', '<div id="g-members"></div>')}`;
    const refresh = async () => {
      const g = await GET(base);
      if (seq !== UI.seq) return;
      const key = `lag:${vhost}\u0000${name}`;
      record(key, g.lag || 0);
      const topics = [...new Set((g.offsets || []).map((o) => o.topic))];
      const perTopic = topics.length > 1 ? topics.map((t) => ({
        name: t, points: record(`${key}\u0000${t}`, (g.offsets || []).filter((o) => o.topic === t).reduce((s, o) => s + (o.lag || 0), 0)),
      })) : [];
      $('#g-cards').innerHTML = [['State', esc(g.state), 'state'], ['Members', fmtNum((g.members || []).length), 'members'], ['Total lag', fmtNum(g.lag), 'lag'],
        ['Protocol', esc(g.protocol || '–'), 'protocol']]
        .map(([k, v, id]) => `<div class="card"><div class="k">${esc(k)}</div><div class="v" id="g-card-${id}">${v}</div></div>`).join('');
      $('#g-chart').innerHTML = chart([{ name: 'total lag', points: UI.hist[key] }, ...perTopic]);
      $('#g-offsets').innerHTML = table(['Topic', 'Partition', 'Committed offset', 'Log end offset', 'Lag', 'Metadata'], (g.offsets || []).map((o) => `<tr><td>${link(`#/topic/${enc(vhost)}/${enc(o.topic)}`, o.topic)}</td><td class="num">${fmtNum(o.partition)}</td><td class="num">${fmtNum(o.committed_offset)}</td><td class="num">${fmtNum(o.log_end_offset)}</td><td class="num lag">${fmtNum(o.lag)}</td><td>${esc(o.metadata || '')}</td></tr>`), 'No committed offsets');
      $('#g-members').innerHTML = table(['Member id', 'Client id', 'Host', 'Instance id', 'Assignment'], (g.members || []).map((m) => `<tr><td>${esc(m.member_id)}</td><td>${esc(m.client_id)}</td><td>${esc(m.client_host)}</td><td>${esc(m.group_instance_id || '')}</td><td>${Object.entries(m.assignment || {}).map(([t, ps]) => esc(`${t}: ${ps.join(', ')}`)).join('<br>')}</td></tr>`), 'No members (the group is empty)');
    };
    await refresh();
    every(() => refresh().catch(() => {}));
  },
};
