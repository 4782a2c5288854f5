// FerryMQ web UI: the AMQP pages (overview, connections, channels, exchanges, queues).
'use strict';

// ---- overview ----
UI.pages.overview = {
  async show(main, _args, seq) {
    main.innerHTML = `<h1>Overview</h1>
      <div class="cards" id="ov-cards"></div>
      <div class="grid2">
        ${section('Message rates', '<div id="ov-rates"></div>')}
        ${section('Queued messages', '<div id="ov-queued"></div>')}
        ${section('Connections, channels, queues', '<div id="ov-objects"></div>')}
        ${section('Node memory', '<div id="ov-memory"></div>')}
      </div>
      ${section('Node', '<div id="ov-node"></div>')}`;
    const refresh = async () => {
      const [o, nodes] = await Promise.all([
        GET('/overview?lengths_age=600&lengths_incr=5&msg_rates_age=600&msg_rates_incr=5'),
        GET('/nodes').catch(() => null),
      ]);
      if (seq !== UI.seq) return;
      const ms = o.message_stats || {}, qt = o.queue_totals || {}, ot = o.object_totals || {};
      const rate = (k) => dig(ms, k + '_details.rate');
      $('#ov-cards').innerHTML = [
        ['Publish', fmtRate(rate('publish'))], ['Deliver / get', fmtRate(rate('deliver_get'))], ['Ack', fmtRate(rate('ack'))],
        ['Ready', fmtNum(qt.messages_ready)], ['Unacked', fmtNum(qt.messages_unacknowledged)],
        ['Connections', fmtNum(ot.connections)], ['Channels', fmtNum(ot.channels)],
        ['Exchanges', fmtNum(ot.exchanges)], ['Queues', fmtNum(ot.queues)], ['Consumers', fmtNum(ot.consumers)],
      ].map(([k, v]) => `<div class="card"><div class="k">${esc(k)}</div><div class="v" data-card="${esc(k)}">${v}</div></div>`).join('');
      $('#ov-rates').innerHTML = chart([
        { name: 'publish', points: ratesFromSamples(dig(ms, 'publish_details.samples')) },
        { name: 'deliver/get', points: ratesFromSamples(dig(ms, 'deliver_get_details.samples')) },
        { name: 'ack', points: ratesFromSamples(dig(ms, 'ack_details.samples')) },
      ], { fmt: fmtRate });
      $('#ov-queued').innerHTML = chart([
        { name: 'ready', points: pointsFromSamples(dig(qt, 'messages_ready_details.samples')) },
        { name: 'unacked', points: pointsFromSamples(dig(qt, 'messages_unacknowledged_details.samples')) },
      ]);
      $('#ov-objects').innerHTML = chart([
        { name: 'connections', points: record('connections', ot.connections || 0) },
        { name: 'channels', points: record('channels', ot.channels || 0) },
        { name: 'queues', points: record('queues', ot.queues || 0) },
      ]);
      const node = nodes && nodes[0];
      if (node) {
        $('#ov-memory').innerHTML = chart([{ name: 'memory used', points: record('mem', node.mem_used || 0) }], { fmt: fmtBytes });
        $('#ov-node').innerHTML = kv([
          ['Name', esc(node.name)], ['Product', esc(`${o.product_name} ${o.product_version}`)],
          ['Uptime', esc(Math.round((node.uptime || 0) / 1000) + ' s')],
          ['Memory', `${fmtBytes(node.mem_used)} of ${fmtBytes(node.mem_limit)} limit${node.mem_alarm ? ' <b class="error">ALARM</b>' : ''}`],
          ['Disk free', `${fmtBytes(node.disk_free)} (limit ${fmtBytes(node.disk_free_limit)})${node.disk_free_alarm ? ' <b class="error">ALARM</b>' : ''}`],
          ['File descriptors', `${fmtNum(node.fd_used)} / ${fmtNum(node.fd_total)}`],
          ['Listeners', (o.listeners || []).map((l) => esc(`${l.protocol} ${l.ip_address}:${l.port}`)).join('<br>')],
        ]);
      } else {
        $('#ov-memory').innerHTML = '<p class="muted">Node figures need the monitoring tag.</p>';
        $('#ov-node').innerHTML = kv([['Product', esc(`${o.product_name} ${o.product_version}`)], ['Node', esc(o.node)]]);
      }
      main.dataset.loaded = '1';
      window.ferrymqOverviewLoaded = window.ferrymqOverviewLoaded || performance.now();
    };
    await refresh();
    every(() => refresh().catch(() => {}));
  },
};

// ---- connections and channels ----
const connColumns = [
  { label: 'Name', sort: 'name', render: (c) => link('#/connection/' + enc(c.name), c.name) },
  { label: 'Protocol', sort: 'protocol', render: (c) => esc(c.protocol) },
  { label: 'User', sort: 'user', render: (c) => esc(c.user) },
  { label: 'Virtual host', sort: 'vhost', render: (c) => esc(c.vhost) },
  { label: 'Client', render: (c) => esc(dig(c, 'client_properties.product') || dig(c, 'client_properties.client_id') || '') },
  { label: 'TLS', render: (c) => yes(c.ssl) },
  { label: 'Channels', sort: 'channels', cls: 'num', render: (c) => fmtNum(c.channels) },
  { label: 'In', cls: 'num', render: (c) => fmtBytes(dig(c, 'recv_oct_details.rate')) + '/s' },
  { label: 'Out', cls: 'num', render: (c) => fmtBytes(dig(c, 'send_oct_details.rate')) + '/s' },
  { label: 'Connected', sort: 'connected_at', render: (c) => esc(fmtTime(c.connected_at)) },
];

const chanColumns = [
  { label: 'Channel', sort: 'name', render: (c) => esc(c.name) },
  { label: 'User', sort: 'user', render: (c) => esc(c.user) },
  { label: 'Virtual host', sort: 'vhost', render: (c) => esc(c.vhost) },
  { label: 'State', render: (c) => esc(c.state) },
  { label: 'Mode', render: (c) => esc([c.confirm ? 'confirm' : '', c.transactional ? 'tx' : ''].filter(Boolean).join(' ')) },
  { label: 'Prefetch', cls: 'num', render: (c) => fmtNum(c.prefetch_count) },
  { label: 'Consumers', sort: 'consumer_count', cls: 'num', render: (c) => fmtNum(c.consumer_count) },
  { label: 'Unacked', sort: 'messages_unacknowledged', cls: 'num', render: (c) => fmtNum(c.messages_unacknowledged) },
  { label: 'Publish', cls: 'num', render: (c) => fmtRate(dig(c, 'message_stats.publish_details.rate')) },
  { label: 'Deliver', cls: 'num', render: (c) => fmtRate(dig(c, 'message_stats.deliver_get_details.rate')) },
  { label: 'Ack', cls: 'num', render: (c) => fmtRate(dig(c, 'message_stats.ack_details.rate')) },
];

function simpleListPage(title, spec) {
  return {
    async show(main) {
      main.innerHTML = `<h1>${esc(title)}</h1>${listShell(spec)}`;
      await bindList(spec);
      every(() => refreshList(spec));
    },
  };
}

UI.pages.connections = simpleListPage('Connections', {
  id: 'connections', columns: connColumns,
  path: (v) => (v ? '/vhosts/' + enc(v) + '/connections' : '/connections'),
});
UI.pages.channels = simpleListPage('Channels', {
  id: 'channels', columns: chanColumns,
  path: (v) => (v ? '/vhosts/' + enc(v) + '/channels' : '/channels'),
});

UI.pages.connection = {
  tab: 'connections',
  async show(main, [name], seq) {
    const path = '/connections/' + enc(name);
    const [c, chans] = await Promise.all([GET(path), GET(path + '/channels')]);
    if (seq !== UI.seq) return;
    main.innerHTML = `<h1>Connection <span class="name">${esc(c.name)}</span></h1>
      ${kv([
        ['Protocol', esc(c.protocol)], ['User', esc(c.user)], ['Virtual host', esc(c.vhost)],
        ['Peer', esc(`${c.peer_host}:${c.peer_port}`)], ['TLS', yes(c.ssl)],
        ['Connected at', esc(fmtTime(c.connected_at))], ['Frame max', fmtNum(c.frame_max)], ['Heartbeat', fmtNum(c.timeout)],
        ['Received', fmtBytes(c.recv_oct)], ['Sent', fmtBytes(c.send_oct)],
        ['Client properties', `<pre>${json(c.client_properties)}</pre>`],
      ])}
      ${section('Channels', table(['Channel', 'State', 'Consumers', 'Prefetch', 'Unacked', 'Unconfirmed'], chans.map((ch) => `<tr><td>${esc(ch.name)}</td><td>${esc(ch.state)}</td><td class="num">${fmtNum(ch.consumer_count)}</td><td class="num">${fmtNum(ch.prefetch_count)}</td><td class="num">${fmtNum(ch.messages_unacknowledged)}</td><td class="num">${fmtNum(ch.messages_unconfirmed)}</td></tr>`)))}
      ${section('Close this connection', `<form id="close-form" class="inline"><label>Reason <input name="reason" value="Closed via management plugin" size="40"></label> <button class="danger">Force close</button></form>`)}`;
    onSubmit('#close-form', (v) => {
      if (!confirm('Close this connection?')) return;
      act('Connection closed', () => api('DELETE', path, undefined, { 'X-Reason': v.reason }), () => { location.hash = '#/connections'; });
    });
  },
};

// ---- exchanges ----
const exchangeColumns = [
  { label: 'Virtual host', sort: 'vhost', render: (x) => esc(x.vhost) },
  { label: 'Name', sort: 'name', render: (x) => link(`#/exchange/${enc(x.vhost)}/${enc(x.name || 'amq.default')}`, x.name || '(AMQP default)') },
  { label: 'Type', sort: 'type', render: (x) => esc(x.type) },
  { label: 'Features', render: (x) => esc([x.durable ? 'D' : '', x.auto_delete ? 'AD' : '', x.internal ? 'I' : '', Object.keys(x.arguments || {}).length ? 'Args' : ''].filter(Boolean).join(' ')) },
];

UI.pages.exchanges = {
  async show(main) {
    const spec = { id: 'exchanges', columns: exchangeColumns, path: (v) => '/exchanges' + (v ? vhostPath(v) : '') };
    main.innerHTML = `<h1>Exchanges</h1>${listShell(spec)}
      ${section('Add an exchange', `<form id="add-exchange" class="grid-form">
        <label>Virtual host <select name="vhost">${vhostOptions(defaultVhost())}</select></label>
        <label>Name <input name="name" required></label>
        <label>Type <select name="type"><option>direct</option><option>fanout</option><option>topic</option><option>headers</option><option>x-delayed-message</option><option>x-message-deduplication</option></select></label>
        <label class="chk"><input type="checkbox" name="durable" checked> Durable</label>
        <label class="chk"><input type="checkbox" name="auto_delete"> Auto delete</label>
        <label class="chk"><input type="checkbox" name="internal"> Internal</label>
        <label class="wide">Arguments (JSON) <textarea name="arguments" rows="2" placeholder='{"x-delayed-type": "direct"}'></textarea></label>
        <button>Add exchange</button></form>`)}`;
    await bindList(spec);
    onSubmit('#add-exchange', (v) => act(`Exchange ${v.name} declared`, () => api('PUT', `/exchanges/${enc(v.vhost)}/${enc(v.name)}`, {
      type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: parseJson(v.arguments, 'arguments'),
    }), () => refreshList(spec)));
  },
};

function publishForm(id, withKey) {
  return `<form id="${id}" class="grid-form">
    ${withKey ? '<label>Routing key <input name="routing_key"></label>' : ''}
    <label>Delivery mode <select name="delivery_mode"><option value="2">2 – persistent</option><option value="1">1 – transient</option></select></label>
    <label>Content type <input name="content_type" placeholder="text/plain"></label>
    <label class="wide">Headers (JSON) <textarea name="headers" rows="2" placeholder='{"x-delay": 5000}'></textarea></label>
    <label class="wide">Payload <textarea name="payload" rows="4"></textarea></label>
    <label>Encoding <select name="payload_encoding"><option>string</option><option>base64</option></select></label>
    <button>Publish message</button></form>`;
}
function publishBody(v, routingKey) {
  const properties = { delivery_mode: +v.delivery_mode };
  const headers = parseJson(v.headers, 'headers');
  if (Object.keys(headers).length) properties.headers = headers;
  if (v.content_type) properties.content_type = v.content_type;
  return { routing_key: routingKey, properties, payload: v.payload, payload_encoding: v.payload_encoding };
}

function bindingRows(bs, vhost, ownSide) {
  return bs.map((b) => {
    const other = ownSide === 'source'
      ? (b.destination_type === 'queue' ? link(`#/queue/${enc(vhost)}/${enc(b.destination)}`, b.destination) : link(`#/exchange/${enc(vhost)}/${enc(b.destination)}`, b.destination)) + ` <span class="muted">(${esc(b.destination_type)})</span>`
      : (b.source === '' ? '(AMQP default)' : link(`#/exchange/${enc(vhost)}/${enc(b.source)}`, b.source));
    const canUnbind = b.source !== '';
    const del = canUnbind ? `<button type="button" class="small unbind" data-path="${esc(`/bindings/${enc(vhost)}/e/${enc(b.source)}/${b.destination_type === 'queue' ? 'q' : 'e'}/${enc(b.destination)}/${enc(b.properties_key)}`)}">Unbind</button>` : '';
    return `<tr><td>${other}</td><td>${esc(b.routing_key)}</td><td><code>${json(b.arguments)}</code></td><td>${del}</td></tr>`;
  });
}

function bindingForm(id, vhost, fixedSide) {
  // fixedSide 'queue:NAME' (choose the source exchange) or 'exchange:NAME' (choose the destination)
  return `<form id="${id}" class="grid-form">
    ${fixedSide === 'queue' ? '<label>From exchange <input name="source" required></label>'
    : '<label>To <select name="kind"><option value="q">queue</option><option value="e">exchange</option></select></label><label>Destination <input name="dest" required></label>'}
    <label>Routing key <input name="routing_key"></label>
    <label class="wide">Arguments (JSON) <textarea name="arguments" rows="2"></textarea></label>
    <button>Bind</button></form>`;
}

UI.pages.exchange = {
  tab: 'exchanges',
  async show(main, [vhost, name], seq) {
    const base = `/exchanges/${enc(vhost)}/${enc(name)}`;
    const x = await GET(base);
    if (seq !== UI.seq) return;
    const isDefault = x.name === '';
    main.innerHTML = `<h1>Exchange <span class="name">${esc(x.name || '(AMQP default)')}</span> <span class="muted">in ${esc(vhost)}</span></h1>
      ${kv([['Type', esc(x.type)], ['Durable', yes(x.durable)], ['Auto delete', yes(x.auto_delete)], ['Internal', yes(x.internal)],
        ['Arguments', `<code>${json(x.arguments)}</code>`], ...(x.x_delayed_pending !== undefined ? [['Delayed pending', fmtNum(x.x_delayed_pending)]] : []),
        ...(x.x_deduplication_cache_size !== undefined ? [['De-duplication cache', fmtNum(x.x_deduplication_cache_size)]] : [])])}
      ${isDefault ? '' : section('Bindings from this exchange', '<div id="x-src"></div>' + bindingForm('x-bind', vhost, 'exchange'))}
      ${section('Bindings to this exchange', '<div id="x-dst"></div>')}
      ${section('Publish message', publishForm('x-publish', true))}
      ${isDefault || x.name.startsWith('amq.') ? '' : section('Delete this exchange', '<button id="x-delete" class="danger">Delete</button>')}`;
    const loadBindings = async () => {
      const [src, dst] = await Promise.all([isDefault ? [] : GET(base + '/bindings/source'), GET(base + '/bindings/destination')]);
      if (seq !== UI.seq) return;
      if (!isDefault) $('#x-src').innerHTML = table(['To', 'Routing key', 'Arguments', ''], bindingRows(src, vhost, 'source'), 'No bindings');
      $('#x-dst').innerHTML = table(['From', 'Routing key', 'Arguments', ''], bindingRows(dst, vhost, 'destination'), 'No bindings');
    };
    await loadBindings();
    onClick(main, '.unbind', (d) => act('Binding removed', () => api('DELETE', d.path), loadBindings));
    onSubmit('#x-bind', (v) => act('Binding added', () => api('POST', `/bindings/${enc(vhost)}/e/${enc(name)}/${v.kind}/${enc(v.dest)}`, { routing_key: v.routing_key, arguments: parseJson(v.arguments, 'arguments') }), loadBindings));
    onSubmit('#x-publish', async (v) => {
      try {
        const r = await api('POST', base + '/publish', publishBody(v, v.routing_key));
        flash(r.routed ? 'Message published.' : 'Message published but not routed.', r.routed ? 'ok' : 'err');
      } catch (e) { flash('Publish failed: ' + e.message, 'err'); }
    });
    const del = $('#x-delete');
    if (del) del.addEventListener('click', () => { if (confirm(`Delete exchange ${x.name}?`)) act('Exchange deleted', () => api('DELETE', base), () => { location.hash = '#/exchanges'; }); });
  },
};

// ---- queues ----
const QUEUE_COLS = 'name,vhost,type,state,durable,auto_delete,exclusive,arguments,policy,consumers,messages,messages_ready,messages_unacknowledged,message_stats.publish_details.rate,message_stats.deliver_get_details.rate,message_stats.ack_details.rate';
const queueColumns = [
  { label: 'Virtual host', sort: 'vhost', render: (q) => esc(q.vhost) },
  { label: 'Name', sort: 'name', render: (q) => link(`#/queue/${enc(q.vhost)}/${enc(q.name)}`, q.name) },
  { label: 'Type', sort: 'type', render: (q) => esc(q.type) },
  { label: 'Features', render: (q) => esc([q.durable ? 'D' : '', q.auto_delete ? 'AD' : '', q.exclusive ? 'Excl' : '', Object.keys(q.arguments || {}).length ? 'Args' : ''].filter(Boolean).join(' ')) + (q.policy ? ` <span class="tag">${esc(q.policy)}</span>` : '') },
  { label: 'State', render: (q) => esc(q.state) },
  { label: 'Ready', sort: 'messages_ready', cls: 'num', render: (q) => fmtNum(q.messages_ready) },
  { label: 'Unacked', sort: 'messages_unacknowledged', cls: 'num', render: (q) => fmtNum(q.messages_unacknowledged) },
  { label: 'Total', sort: 'messages', cls: 'num total', render: (q) => fmtNum(q.messages) },
  { label: 'Consumers', sort: 'consumers', cls: 'num', render: (q) => fmtNum(q.consumers) },
  { label: 'Incoming', cls: 'num', render: (q) => fmtRate(dig(q, 'message_stats.publish_details.rate')) },
  { label: 'Deliver / get', cls: 'num', render: (q) => fmtRate(dig(q, 'message_stats.deliver_get_details.rate')) },
  { label: 'Ack', cls: 'num', render: (q) => fmtRate(dig(q, 'message_stats.ack_details.rate')) },
];

UI.pages.queues = {
  async show(main) {
    const spec = { id: 'queues', columns: queueColumns, cols: QUEUE_COLS, path: (v) => '/queues' + (v ? vhostPath(v) : '') };
    main.innerHTML = `<h1>Queues</h1>${listShell(spec)}
      ${section('Add a queue', `<form id="add-queue" class="grid-form">
        <label>Virtual host <select name="vhost">${vhostOptions(defaultVhost())}</select></label>
        <label>Name <input name="name" id="add-queue-name" required></label>
        <label>Type <select name="type"><option>classic</option><option>quorum</option></select></label>
        <label class="chk"><input type="checkbox" name="durable" checked> Durable</label>
        <label class="chk"><input type="checkbox" name="auto_delete"> Auto delete</label>
        <label class="wide">Arguments (JSON) <textarea name="arguments" rows="2" placeholder='{"x-message-ttl": 60000, "x-dead-letter-exchange": "dlx"}'></textarea></label>
        <button id="add-queue-submit">Add queue</button></form>`)}`;
    await bindList(spec);
    every(() => refreshList(spec));
    onSubmit('#add-queue', (v) => act(`Queue ${v.name} declared`, () => api('PUT', `/queues/${enc(v.vhost)}/${enc(v.name)}`, {
      durable: v.durable, auto_delete: v.auto_delete, arguments: Object.assign({ 'x-queue-type': v.type }, parseJson(v.arguments, 'arguments')),
    }), () => refreshList(spec)));
  },
};

UI.pages.queue = {
  tab: 'queues',
  async show(main, [vhost, name], seq) {
    const base = `/queues/${enc(vhost)}/${enc(name)}`;
    const q = await GET(base);
    if (seq !== UI.seq) return;
    main.innerHTML = `<h1>Queue <span class="name">${esc(q.name)}</span> <span class="muted">in ${esc(vhost)}</span></h1>
      <div class="cards" id="q-cards"></div>
      <div class="grid2">${section('Details', '<div id="q-details"></div>')}${section('Queued messages', '<div id="q-chart"></div>')}</div>
      ${section('Consumers', '<div id="q-consumers"></div>')}
      ${section('Bindings', '<div id="q-bindings"></div>' + bindingForm('q-bind', vhost, 'queue'))}
      ${section('Get messages', `<form id="q-get" class="grid-form">
        <label>Ack mode <select name="ackmode">
          <option value="ack_requeue_true">Nack, requeue true</option><option value="ack_requeue_false">Ack, remove from queue</option>
          <option value="reject_requeue_true">Reject, requeue true</option><option value="reject_requeue_false">Reject, requeue false (dead-letter)</option></select></label>
        <label>Encoding <select name="encoding"><option value="auto">Auto string / base64</option><option value="base64">base64</option></select></label>
        <label>Messages <input name="count" type="number" value="1" min="1" max="10000"></label>
        <label>Truncate (bytes) <input name="truncate" type="number" value="50000" min="1"></label>
        <button id="q-get-submit">Get message(s)</button></form><div id="q-messages"></div>`)}
      ${section('Publish message', '<p class="muted">Published to the default exchange with the queue name as routing key.</p>' + publishForm('q-publish', false))}
      ${section('Purge and delete', `<button id="q-purge" class="warn">Purge messages</button> <button id="q-delete" class="danger">Delete queue</button>
        <label class="chk"><input type="checkbox" id="q-if-empty"> only if empty</label> <label class="chk"><input type="checkbox" id="q-if-unused"> only if unused</label>`)}`;
    const refresh = async () => {
      const [q2, consumers] = await Promise.all([GET(base + '?lengths_age=300&lengths_incr=5&msg_rates_age=300&msg_rates_incr=5'), GET('/consumers/' + enc(vhost))]);
      if (seq !== UI.seq) return;
      const ms = q2.message_stats || {};
      $('#q-cards').innerHTML = [
        ['Total', fmtNum(q2.messages), 'messages'], ['Ready', fmtNum(q2.messages_ready), 'ready'], ['Unacked', fmtNum(q2.messages_unacknowledged), 'unacked'],
        ['Consumers', fmtNum(q2.consumers), 'consumers'], ['Incoming', fmtRate(dig(ms, 'publish_details.rate')), 'in'],
        ['Deliver / get', fmtRate(dig(ms, 'deliver_get_details.rate')), 'out'], ['Ack', fmtRate(dig(ms, 'ack_details.rate')), 'ack'],
      ].map(([k, v, id]) => `<div class="card"><div class="k">${esc(k)}</div><div class="v" id="q-card-${id}">${v}</div></div>`).join('');
      $('#q-details').innerHTML = kv([
        ['Type', esc(q2.type)], ['State', esc(q2.state)], ['Durable', yes(q2.durable)], ['Auto delete', yes(q2.auto_delete)], ['Exclusive', yes(q2.exclusive)],
        ['Arguments', `<code>${json(q2.arguments)}</code>`], ['Policy', esc(q2.policy || '')], ['Operator policy', esc(q2.operator_policy || '')],
        ['Effective policy', `<code>${json(q2.effective_policy_definition)}</code>`], ['Ready bytes', fmtBytes(q2.message_bytes_ready)], ['Node', esc(q2.node)],
      ]);
      $('#q-chart').innerHTML = chart([
        { name: 'ready', points: pointsFromSamples(dig(q2, 'messages_ready_details.samples')) },
        { name: 'unacked', points: pointsFromSamples(dig(q2, 'messages_unacknowledged_details.samples')) },
      ]);
      const mine = consumers.filter((c) => c.queue && c.queue.name === name);
      $('#q-consumers').innerHTML = table(['Consumer tag', 'Channel', 'Ack required', 'Exclusive', 'Prefetch', 'Active', 'Arguments'], mine.map((c) => `<tr><td>${esc(c.consumer_tag)}</td><td>${esc(dig(c, 'channel_details.name'))}</td><td>${yes(c.ack_required)}</td><td>${yes(c.exclusive)}</td><td class="num">${fmtNum(c.prefetch_count)}</td><td>${yes(c.active)}</td><td><code>${json(c.arguments)}</code></td></tr>`), 'No consumers');
    };
    const loadBindings = async () => {
      const bs = await GET(base + '/bindings');
      if (seq !== UI.seq) return;
      $('#q-bindings').innerHTML = table(['From', 'Routing key', 'Arguments', ''], bindingRows(bs, vhost, 'destination'), 'No bindings');
    };
    await Promise.all([refresh(), loadBindings()]);
    every(() => refresh().catch(() => {}));
    onClick(main, '.unbind', (d) => act('Binding removed', () => api('DELETE', d.path), loadBindings));
    onSubmit('#q-bind', (v) => act('Binding added', () => api('POST', `/bindings/${enc(vhost)}/e/${enc(v.source)}/q/${enc(name)}`, { routing_key: v.routing_key, arguments: parseJson(v.arguments, 'arguments') }), loadBindings));
    onSubmit('#q-get', async (v) => {
      try {
        const msgs = await api('POST', base + '/get', { count: +v.count, ackmode: v.ackmode, encoding: v.encoding, truncate: +v.truncate });
        $('#q-messages').innerHTML = msgs.length ? msgs.map((m, i) => `<div class="message"><h3>Message ${i + 1}</h3>${kv([
          ['Exchange', esc(m.exchange || '(AMQP default)')], ['Routing key', esc(m.routing_key)], ['Redelivered', yes(m.redelivered)],
          ['Remaining in queue', fmtNum(m.message_count)], ['Properties', `<code>${json(m.properties)}</code>`],
          ['Payload', `<span class="muted">${fmtNum(m.payload_bytes)} bytes, encoding ${esc(m.payload_encoding)}</span><pre class="payload">${esc(m.payload)}</pre>`],
        ])}</div>`).join('') : '<p class="muted" id="q-empty">Queue is empty.</p>';
        refresh().catch(() => {});
      } catch (e) { flash('Get failed: ' + e.message, 'err'); }
    });
    onSubmit('#q-publish', async (v) => {
      try {
        const r = await api('POST', '/exchanges/' + enc(vhost) + '/amq.default/publish', publishBody(v, name));
        flash(r.routed ? 'Message published.' : 'Message published but not routed.', r.routed ? 'ok' : 'err');
        refresh().catch(() => {});
      } catch (e) { flash('Publish failed: ' + e.message, 'err'); }
    });
    $('#q-purge').addEventListener('click', () => { if (confirm(`Purge every message of ${name}?`)) act('Queue purged', () => api('DELETE', base + '/contents'), refresh); });
    $('#q-delete').addEventListener('click', () => {
      if (!confirm(`Delete queue ${name}?`)) return;
      const qs = new URLSearchParams();
      if ($('#q-if-empty').checked) qs.set('if-empty', 'true');
      if ($('#q-if-unused').checked) qs.set('if-unused', 'true');
      act(`Queue ${name} deleted`, () => api('DELETE', base + (qs.toString() ? '?' + qs : '')), () => { location.hash = '#/queues'; });
    });
  },
};
