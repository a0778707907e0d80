// crosscam serve: the page. Plain JS, no build step, nothing from the internet.
// Players show frames decoded by the server (/api/frames) and draw the run's boxes
// (/api/tracks) on a canvas; clicking a box, drawing one or uploading a photo (and boxing anyone in it) asks
// /api/query/*, whose answers are `crosscam query --json` objects.
'use strict';

const BOX_WINDOW = 100;   // frames of boxes fetched at once
const POLL_MS = 2000;     // how often the page checks the store's generation and the cameras
const DRAG_PX = 6;        // a drag shorter than this is a click

const S = {
  status: null,          // /api/status
  cameras: new Map(),    // name -> /api/cameras entry
  players: new Map(),    // name -> Player
  colors: new Map(),     // identity -> '#rrggbb'
  query: null,           // the last question, asked again when the store changes: {kind, ...}
  asked: 0,              // questions asked so far: an answer to an older one is dropped
  result: null,          // its answer (QueryResult JSON)
  shown: 0,              // index of the match shown in the results panel
  selected: null,        // identity highlighted in the players
  galleryOffset: 0,
  photo: null,           // the uploaded photo shown above the players (ImageBitmap)
};

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k.startsWith('data-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
};

async function api(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw Object.assign(new Error(message), { status: response.status });
  }
  return response;
}
const getJSON = async (url, options) => (await api(url, options)).json();

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

function plural(n, word, words) {  // '1 track', '2 tracks'; words for irregular plurals (as pipeline.text.plural)
  return `${n} ${n === 1 ? word : (words || word + 's')}`;
}

function fmtSeconds(s) {  // [-]hh:mm:ss.s, as pipeline.text.clock_text without an origin
  if (s === null || s === undefined || Number.isNaN(s)) return '?';
  const tenths = Math.round(Math.abs(s) * 10);  // round once, so 59.96 s reads 00:01:00.0, not 00:00:60.0
  const h = Math.floor(tenths / 36000), m = Math.floor((tenths % 36000) / 600), sec = (tenths % 600) / 10;
  const two = (n) => String(n).padStart(2, '0');
  return (s < 0 && tenths ? '-' : '') + `${two(h)}:${two(m)}:` + sec.toFixed(1).padStart(4, '0');
}
function fmtWhen(s, origin) {  // seconds on the run's clock as a date and time (to 0.1 s) where start times were given
  if (!origin) return fmtSeconds(s);
  const [, local, zone] = origin.match(/^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)(.*)$/) || [, null, ''];
  if (!local) return fmtSeconds(s);
  const ms = Date.parse(local.replace(' ', 'T').replace(/(\.\d{3})\d+/, '$1') + 'Z') + s * 1000;  // the file's own zone, kept as written
  return new Date(Math.round(ms / 100) * 100).toISOString().slice(0, 21).replace('T', ' ') + zone;
}
const runClock = (s) => fmtWhen(s, S.status && S.status.clock_origin);  // a time on the run's clock, as a date where it has one
const fileUrl = (path) => (path && S.status && path.startsWith(S.status.run_dir + '/'))
  ? '/files/' + path.slice(S.status.run_dir.length + 1).split('/').map(encodeURIComponent).join('/') : '';

async function colorsFor(ids) {
  const missing = [...new Set(ids)].filter(i => i !== null && !S.colors.has(i));
  if (missing.length) {
    const found = await getJSON('/api/colors?' + missing.map(i => 'identity=' + i).join('&'));
    for (const [k, v] of Object.entries(found)) S.colors.set(Number(k), v);
  }
}

// ---------------------------------------------------------------------------------------------
class Player {
  constructor(camera) {
    this.name = camera.name;
    this.index = 0;
    this.playing = false;
    this.boxCache = new Map();  // window start -> Promise of {frame: [boxes]}
    this.image = null;          // the ImageBitmap shown
    this.shownIndex = -1;
    this.want = 0;
    this.drag = null;
    this.canvas = el('canvas', { 'data-camera': camera.name, 'data-frame': '-1', tabIndex: 0,
      title: 'click a box: where else was this person? drag on a paused frame: find anyone. ' +
             'keys: space play/pause, ← → one frame, shift+← → one second' });
    this.button = el('button', { textContent: 'play', onclick: () => (this.playing ? this.pause() : this.play()) });
    this.scrubber = el('input', { type: 'range', min: 0, max: 0, value: 0,
      oninput: () => { this.pause(); this.seek(Number(this.scrubber.value)); } });
    this.clock = el('div', { class: 'clock' });
    this.info = el('small');
    this.note = el('div', { class: 'note' });
    this.root = el('div', { class: 'player', 'data-camera': camera.name },
      el('h2', {}, camera.name, this.info), this.canvas,
      el('div', { class: 'bar' }, this.button, this.scrubber), this.clock, this.note);
    // pointer capture: a drag released outside the canvas still ends there (clamped to the frame)
    this.canvas.addEventListener('pointerdown', (e) => { this.canvas.setPointerCapture(e.pointerId); this.mouseDown(e); });
    this.canvas.addEventListener('pointermove', (e) => this.mouseMove(e));
    this.canvas.addEventListener('pointerup', (e) => this.mouseUp(e));
    this.canvas.addEventListener('pointercancel', () => { this.drag = null; this.draw(); });
    this.canvas.addEventListener('keydown', (e) => this.key(e));
    this.update(camera);
  }

  update(camera) {
    this.camera = camera;
    const [w, h] = camera.frame_size || [640, 360];
    this.frameW = w; this.frameH = h;
    const width = Math.min(w, 960);
    if (this.canvas.width !== width) { this.canvas.width = width; this.canvas.height = Math.round(h * width / w); }
    this.count = camera.frames || 0;
    this.scrubber.max = Math.max(0, this.count - 1);
    const last = camera.last_tracked_frame;  // --max-frames, Ctrl-C: the video goes on untracked
    this.info.textContent = `${camera.fps || '?'} fps · ${plural(this.count, 'frame')} · ${plural(camera.tracks, 'track')}`
      + (last !== null && last !== undefined && last + (camera.stride || 1) < this.count ? ` · tracked to frame ${last}` : '')
      + (camera.status !== 'complete' ? ` · ${camera.status}` : '');
    this.noteText = camera.frames_error || (camera.frames_from === 'annotated.mp4'
      ? 'source video not found or not seekable (a raw stream): showing annotated.mp4 (its own boxes are burned in)' : '');
    this.note.textContent = this.noteText;
    this.boxCache.clear();
    if (this.shownIndex < 0) this.index = camera.first_tracked_frame || 0;  // open where the boxes start
    if (this.count) this.seek(Math.min(this.index, this.count - 1), true);
  }

  boxes(index) {
    // frames from annotated.mp4 of a --stride run: each shows the tracked frame at or before it
    const stride = this.camera.frames_from === 'annotated.mp4' ? (this.camera.stride || 1) : 1;
    index -= index % stride;
    const start = Math.floor(index / BOX_WINDOW) * BOX_WINDOW;
    if (!this.boxCache.has(start)) {
      const p = getJSON(`/api/tracks/${encodeURIComponent(this.name)}?frame=${start}&count=${BOX_WINDOW}`)
        .then(r => r.frames).catch(e => { this.boxCache.delete(start); showError(e.message); return {}; });
      this.boxCache.set(start, p);
    }
    return this.boxCache.get(start).then(frames => frames[String(index)] || []);
  }

  async seek(index, force = false) {
    index = Math.max(0, Math.min(index, this.count - 1));
    this.want = index;  // also when it is shown already: a seek still on its way is dropped
    if (index === this.shownIndex && !force) return;
    let response;
    try {
      response = await api(`/api/frames/${encodeURIComponent(this.name)}/${index}?width=${this.canvas.width}`);
    } catch (e) { this.note.textContent = e.message; return; }
    const [bitmap, boxes] = await Promise.all([response.blob().then(b => createImageBitmap(b)), this.boxes(index)]);
    if (index !== this.want) return;  // a later seek overtook this one
    this.image = bitmap;
    this.shownIndex = this.index = index;
    this.videoTime = parseFloat(response.headers.get('X-Video-Time-S'));
    this.frameBoxes = boxes;
    this.scrubber.value = index;
    this.draw();
    this.canvas.setAttribute('data-frame', String(index));
  }

  draw(rubber) {
    const ctx = this.canvas.getContext('2d');
    const k = this.canvas.width / this.frameW;
    if (this.image) ctx.drawImage(this.image, 0, 0, this.canvas.width, this.canvas.height);
    const px = this.canvas.width / (this.canvas.clientWidth || this.canvas.width);  // canvas pixels per screen pixel
    ctx.font = `${Math.round(13 * px)}px system-ui, sans-serif`;  // 13 screen pixels whatever the player's size
    const boxes = this.frameBoxes || [];
    const alpha = b => (S.selected === null || b.identity === S.selected ? 1 : 0.7);
    for (const b of boxes) {
      const [x1, y1, x2, y2] = b.box.map(v => v * k);
      ctx.globalAlpha = alpha(b);
      ctx.lineWidth = (b.identity === S.selected ? 4 : 2) * px;
      ctx.strokeStyle = b.color;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
    const placed = [];
    for (const b of boxes) {  // labels after every box: no outline crosses one
      const label = b.identity === null ? `t${b.track_id}` : String(b.identity);
      const tw = ctx.measureText(label).width + 6 * px, th = 16 * px;
      const [left, top] = placeLabel(b.box.map(v => v * k), tw, th, this.canvas.width, this.canvas.height, placed);
      ctx.globalAlpha = alpha(b);
      ctx.fillStyle = b.color;
      ctx.fillRect(left, top, tw, th);
      ctx.fillStyle = '#000';
      ctx.fillText(label, left + 3 * px, top + th - 4 * px);
    }
    ctx.globalAlpha = 1;
    if (rubber) {
      ctx.setLineDash([5, 4]); ctx.strokeStyle = '#fff'; ctx.lineWidth = 2;
      ctx.strokeRect(rubber[0], rubber[1], rubber[2] - rubber[0], rubber[3] - rubber[1]);
      ctx.setLineDash([]);
    }
    const offset = this.camera.time_offset_s || 0;
    const t = Number.isNaN(this.videoTime) ? this.index / (this.camera.fps || 10) : this.videoTime;
    const last = this.camera.last_tracked_frame;
    const untracked = last !== null && last !== undefined && this.index >= last + (this.camera.stride || 1)
      ? ` · not tracked: the run stopped at frame ${last}` : '';
    const when = this.camera.common_clock ? runClock(t + offset) : fmtSeconds(t);
    this.clock.textContent = `frame ${this.index} · ${when} (${this.camera.common_clock ? 'run clock' : "from the video's start"})${untracked}`;
  }

  async play() {
    if (!this.count) return;
    this.playing = true;
    this.button.textContent = 'pause';
    if (this.index >= this.count - 1) await this.seek(0);
    const period = 1000 / (this.camera.fps || 10);
    while (this.playing && this.index < this.count - 1) {
      const t0 = performance.now();
      await this.seek(this.index + 1);
      const rest = period - (performance.now() - t0);
      if (rest > 0) await new Promise(r => setTimeout(r, rest));
    }
    this.pause();
  }

  pause() { this.playing = false; this.button.textContent = 'play'; }

  hint(message) {  // a passing note under the player
    this.note.textContent = message;
    clearTimeout(this.hintTimer);
    this.hintTimer = setTimeout(() => { if (this.note.textContent === message) this.note.textContent = this.noteText; }, 4000);
  }

  point(e) {  // canvas pixels, inside the frame
    const r = this.canvas.getBoundingClientRect();
    const clamp = (v, hi) => Math.max(0, Math.min(v, hi));
    return [clamp((e.clientX - r.left) * this.canvas.width / r.width, this.canvas.width),
            clamp((e.clientY - r.top) * this.canvas.height / r.height, this.canvas.height)];
  }

  key(e) {
    const step = e.shiftKey ? Math.round(this.camera.fps || 10) : 1;
    if (e.key === ' ') { this.playing ? this.pause() : this.play(); }
    // from the frame asked for last, not the one shown: keys repeat faster than frames arrive
    else if (e.key === 'ArrowRight') { this.pause(); this.seek(this.want + step); }
    else if (e.key === 'ArrowLeft') { this.pause(); this.seek(this.want - step); }
    else return;
    e.preventDefault();
  }

  mouseDown(e) { this.drag = { from: this.point(e), to: this.point(e) }; }

  mouseMove(e) {
    if (!this.drag || this.playing) return;
    this.drag.to = this.point(e);
    const [a, b] = [this.drag.from, this.drag.to];
    if (Math.hypot(b[0] - a[0], b[1] - a[1]) >= DRAG_PX) this.draw([a[0], a[1], b[0], b[1]]);
  }

  mouseUp(e) {
    if (!this.drag) return;
    const a = this.drag.from, b = this.point(e);
    this.drag = null;
    const k = this.canvas.width / this.frameW;
    if (Math.hypot(b[0] - a[0], b[1] - a[1]) < DRAG_PX) {
      this.pause();
      const [x, y] = [a[0] / k, a[1] / k];
      const hits = (this.frameBoxes || []).filter(o => x >= o.box[0] && x <= o.box[2] && y >= o.box[1] && y <= o.box[3]);
      hits.sort((p, q) => (p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) - (q.box[2] - q.box[0]) * (q.box[3] - q.box[1]));
      if (hits.length) ask({ kind: 'track', camera: this.name, track: hits[0].track_id });
      else this.hint('no tracked person there: drag a box around anyone to search for them');
      return;
    }
    if (this.playing) { this.hint('pause first, then drag a box around the person'); return; }
    const box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])].map(v => Math.round(v / k));
    this.draw();
    ask({ kind: 'box', camera: this.name, frame: this.index, box });
  }
}

// ---------------------------------------------------------------------------------------------
function limitsProblem() {  // a one-line message when top-k or min score is out of range, else ''
  const k = $('top-k').value, score = $('min-score').value;
  if (k !== '' && !(/^\d+$/.test(k.trim()) && k >= 1 && k <= 100)) return `top-k ${k}: give a whole number from 1 to 100`;
  if (score !== '' && !(Number(score) >= -1 && Number(score) <= 1)) return `min score ${score}: give a cosine similarity from -1 to 1`;
  return '';
}

function limits() {
  return `top_k=${encodeURIComponent($('top-k').value || 5)}&min_score=${encodeURIComponent($('min-score').value || -1)}`;
}

// The question asked is kept in the address (#track=cam2:3, #identity=5, #box=cam2:41:10,20,50,120):
// back and forward step through the questions, and a reload or a shared link asks it again.
function queryHash(q) {
  if (q.kind === 'track') return `#track=${encodeURIComponent(q.camera)}:${q.track}`;
  if (q.kind === 'identity') return `#identity=${q.identity}`;
  if (q.kind === 'box') return `#box=${encodeURIComponent(q.camera)}:${q.frame}:${q.box.map(v => Math.round(v)).join(',')}`;
  return '';  // an uploaded photo cannot be put in an address
}

const decoded = (text) => { try { return decodeURIComponent(text); } catch (e) { return null; } };  // null: a bad %-escape

function hashQuery(hash) {
  const [kind, value = ''] = hash.replace(/^#/, '').split('=');
  const parts = value.split(':');
  const int = (v) => (/^-?\d+$/.test(v) ? Number(v) : NaN);
  if (kind === 'track' && parts.length === 2 && !Number.isNaN(int(parts[1])) && decoded(parts[0]) !== null) {
    return { kind: 'track', camera: decoded(parts[0]), track: int(parts[1]) };
  }
  if (kind === 'identity' && !Number.isNaN(int(value))) return { kind: 'identity', identity: int(value) };
  const box = (parts[2] || '').split(',').map(Number);
  if (kind === 'box' && parts.length === 3 && !Number.isNaN(int(parts[1])) && box.length === 4 && box.every(Number.isFinite)
      && decoded(parts[0]) !== null) {
    return { kind: 'box', camera: decoded(parts[0]), frame: int(parts[1]), box };
  }
  return null;
}

function askFromAddress() {
  const query = hashQuery(location.hash);
  if (query) {
    ask(query, false, false);
  } else if (location.hash.length > 1) {  // a link cut short or mistyped
    showError(`${decoded(location.hash) ?? location.hash}: not a question the page knows; an address ends in #track=CAMERA:ID, `
      + '#identity=N or #box=CAMERA:FRAME:x1,y1,x2,y2');
  } else if (!S.photo) {  // back to the page before any question
    S.query = S.result = S.selected = null;
    S.asked++;  // an answer still on its way is dropped
    $('results').replaceChildren(el('p', { class: 'hint', textContent: 'No one selected yet.' }));
    for (const p of S.players.values()) p.draw();
  }
}

async function ask(query, quiet = false, remember = true) {
  const wrong = limitsProblem();  // the page's own words, before the server's
  if (wrong) { showError(wrong); return; }
  const hash = queryHash(query);
  if (remember && !quiet && hash !== location.hash) history.pushState(null, '', hash || location.pathname + location.search);
  S.query = query;
  const asked = ++S.asked;
  const current = () => asked === S.asked;  // a later question overtook this one: its answer is dropped
  if (!quiet) showError('');
  const panel = $('results');
  if (!quiet) panel.replaceChildren(el('p', { class: 'hint', textContent: 'Searching…' }));
  try {
    let result;
    if (query.kind === 'track') {
      result = await getJSON(`/api/query/track?camera=${encodeURIComponent(query.camera)}&track=${query.track}&${limits()}`);
    } else if (query.kind === 'identity') {
      result = await getJSON(`/api/identities/${query.identity}?${limits()}`);
    } else {
      const form = new FormData();
      if (query.kind === 'box') {
        form.append('camera', query.camera); form.append('frame', String(query.frame)); form.append('box', query.box.join(','));
      } else {
        form.append('image', query.file, query.file.name);
        if (query.box) form.append('box', query.box.join(','));
        if (query.camera) form.append('camera', query.camera);
      }
      result = await getJSON(`/api/query/image?${limits()}`, { method: 'POST', body: form });
    }
    await colorsFor(result.matches.map(m => m.identity));
    if (!current()) return;
    S.result = result;
    S.shown = 0;
    renderResult();
    if (!quiet) bringIntoView(panel);
  } catch (e) {
    if (!current()) return;
    if (quiet) {  // asked again after a store update: the question itself may be gone (ids renumbered)
      panel.replaceChildren(el('p', { class: 'hint', textContent: `After the store update: ${e.message}. Pick the person again.` }));
      S.result = S.selected = null;  // the question stays: the next update (a store made again) asks it again
      for (const p of S.players.values()) p.draw();
      return;
    }
    showError(e.message);  // said once, at the top
    panel.replaceChildren(el('p', { class: 'hint', textContent: 'No answer: the message above says why.' }));
  }
}

// An uploaded photo stays above the players until closed: its largest person is searched at once
// (as `crosscam query --image`), a box dragged around anyone searches for them (--box), and "from
// camera" gives the camera it was taken by, whose colour normalisation the crop then gets (--camera).
async function showPhoto(file) {
  let bitmap;
  try { bitmap = await createImageBitmap(file); }
  catch { bitmap = null; }
  const limits = S.status || {};  // the server's (/api/status): larger photos are refused
  if (!bitmap || file.size > limits.max_upload_bytes || bitmap.width * bitmap.height > limits.max_upload_pixels) {
    if (bitmap) bitmap.close();
    closePhoto();
    ask({ kind: 'upload', file });  // not an image the browser reads, or too large: the server's answer says why
    return;
  }
  const scale = Math.min(1, 360 / bitmap.height, 640 / bitmap.width);  // canvas pixels per image pixel
  const canvas = el('canvas', { id: 'photo-canvas', width: Math.round(bitmap.width * scale), height: Math.round(bitmap.height * scale),
    title: 'drag a box around the person to search for' });
  const camera = el('select', { id: 'photo-camera' }, el('option', { value: '', textContent: 'none: colours as they are' }),
    ...[...S.cameras.values()].filter(c => c.colour_normalised).map(c => el('option', { value: c.name, textContent: c.name })));
  let drag = null, box = null;  // box: image pixels of the person searched for, null for the largest
  const draw = (rubber) => {
    const ctx = canvas.getContext('2d');
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const shown = rubber || (box && box.map(v => v * scale));
    if (!shown) return;
    ctx.setLineDash(rubber ? [5, 4] : []); ctx.strokeStyle = rubber ? '#fff' : '#3b82f6'; ctx.lineWidth = 2;
    ctx.strokeRect(shown[0], shown[1], shown[2] - shown[0], shown[3] - shown[1]);
    ctx.setLineDash([]);
  };
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [Math.max(0, Math.min((e.clientX - r.left) * canvas.width / r.width, canvas.width)),
            Math.max(0, Math.min((e.clientY - r.top) * canvas.height / r.height, canvas.height))];
  };
  const hint = el('span', { class: 'hint' });
  const search = () => {
    hint.textContent = box ? `Searching for the person in the box ${box.join(',')}. Drag another box, or search the largest person.`
      : 'Searching for the largest person the detector finds (with the motion detector: the whole photo). Drag a box around anyone to search for them instead.';
    ask({ kind: 'upload', file, box, camera: camera.value || null });
  };
  canvas.addEventListener('pointerdown', (e) => { canvas.setPointerCapture(e.pointerId); drag = point(e); });
  canvas.addEventListener('pointermove', (e) => { if (drag) { const b = point(e); draw([drag[0], drag[1], b[0], b[1]]); } });
  canvas.addEventListener('pointerup', (e) => {
    if (!drag) return;
    const a = drag, b = point(e);
    drag = null;
    if (Math.hypot(b[0] - a[0], b[1] - a[1]) < DRAG_PX) { draw(); return; }
    const image = (v, i) => Math.min(Math.round(v / scale), i % 2 ? bitmap.height : bitmap.width);  // inside the photo
    box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])].map(image);
    draw();
    search();
  });
  canvas.addEventListener('pointercancel', () => { drag = null; draw(); });
  camera.addEventListener('change', search);
  closePhoto();  // the photo before this one
  S.photo = bitmap;
  $('photo').replaceChildren(canvas, el('div', { class: 'side' },
    el('strong', { textContent: `${file.name} · ${bitmap.width}x${bitmap.height}` }),
    hint,
    el('label', { title: 'the camera that took the photo: its colour normalisation is applied to the crop, as to its own crops',
      hidden: camera.options.length < 2 },  // no camera's colours were equalised: nothing to choose
      'from camera ', camera),
    el('div', {}, el('button', { id: 'photo-largest', textContent: 'largest person', onclick: () => { box = null; draw(); search(); } }),
      ' ', el('button', { id: 'photo-close', textContent: 'close', onclick: closePhoto }))));
  $('photo').hidden = false;
  draw();
  search();
}

function closePhoto() {  // and free its pixels
  if (S.photo) S.photo.close();
  S.photo = null;
  $('photo').hidden = true;
  $('photo').replaceChildren();
}

function bringIntoView(node) {  // on narrow windows the panel sits below the players
  const r = node.getBoundingClientRect();
  if (r.top > window.innerHeight - 80 || r.bottom < 0) node.scrollIntoView({ block: 'start', behavior: 'smooth' });
}

function renderResult() {
  const result = S.result, panel = $('results');
  const match = result.matches[S.shown];
  const nodes = [];
  if (!match) {
    S.selected = null;
    nodes.push(el('p', { class: 'hint', textContent: `${result.query}: no identity reaches the minimum score.` }));
  } else {
    S.selected = match.identity;
    const color = S.colors.get(match.identity) || '#999';
    nodes.push(el('h2', { 'data-identity': String(match.identity) }, el('span', { class: 'swatch', style: `background:${color}` }),
      `identity ${match.identity}`,  // the identity asked for scores 1 against itself: no score then
      result.query === `identity ${match.identity}` ? '' : el('small', { textContent: ` score ${match.score.toFixed(3)}` })));
    const cams = new Set(match.appearances.map(a => a.camera));
    nodes.push(el('div', { class: 'query', textContent: `${result.query} · seen in ${cams.size} camera${cams.size === 1 ? '' : 's'} · times: ${result.common_clock ? (result.clock_origin ? `common clock, 0 s = ${result.clock_origin}` : 'common clock') : "from each video's start (no cameras file)"}` }));
    nodes.push(timeline(match, color));
    const low = parseFloat($('low-score').value);
    const ordered = [...match.appearances].sort((p, q) => p.start_s - q.start_s || p.camera.localeCompare(q.camera));
    for (const a of ordered) {
      const isLow = a.score < low;
      nodes.push(el('div', { class: 'appearance' + (isLow ? ' low' : ''), 'data-camera': a.camera, 'data-start-s': String(a.start_s),
        'data-end-s': String(a.end_s), 'data-start-frame': String(a.start_frame), 'data-end-frame': String(a.end_frame) },
        el('img', { src: fileUrl(a.thumbnail), alt: '' }),
        el('div', {},
          el('div', {}, el('span', { class: 'cam', textContent: a.camera }), ` · ${a.track_ids.length === 1 ? 'track' : 'tracks'} ${a.track_ids.join(', ')}`),
          el('div', { class: 'times', textContent: `${fmtWhen(a.start_s, result.clock_origin)} – ${fmtWhen(a.end_s, result.clock_origin)} · frames ${a.start_frame}–${a.end_frame}` }),
          el('div', {}, `score ${a.score.toFixed(3)} `, isLow ? el('span', { class: 'low-mark', textContent: 'low score' }) : '')),
        el('button', { class: 'seek', textContent: 'seek ▸', title: `show ${a.camera} at frame ${a.start_frame}`,
          onclick: () => seekCamera(a.camera, a.start_frame) })));
    }
  }
  if (result.matches.length > 1) {
    const others = el('div', { class: 'others', title: 'other identities this query resembles, with their score (cosine similarity of features; 1 = the same)' }, 'other identities (score): ');
    result.matches.forEach((m, i) => {
      if (i === S.shown) return;
      others.append(el('button', { textContent: `${m.identity} (${m.score.toFixed(2)})`, onclick: () => { S.shown = i; renderResult(); } }));
    });
    nodes.push(others);
  }
  panel.replaceChildren(...nodes);
  for (const p of S.players.values()) p.draw();
  markSelectedCard();
}

function markSelectedCard() {  // the gallery card of the identity in the results panel stands out
  for (const card of document.querySelectorAll('#gallery .card')) {
    card.classList.toggle('selected', S.selected !== null && card.dataset.identity === String(S.selected));
  }
}

// Where a box's label goes (as annotated.mp4 draws them): above its top-left corner, else inside it
// at the top left, above or inside at its top right, below it, or inside at the bottom left, wherever
// it covers no label placed before (else where it covers least), inside the frame; added to `placed`.
function placeLabel([x1, y1, x2, y2], w, h, width, height, placed) {
  const overlap = (a, b) => Math.max(0, Math.min(a[0] + w, b[0] + b[2]) - Math.max(a[0], b[0]))
    * Math.max(0, Math.min(a[1] + h, b[1] + b[3]) - Math.max(a[1], b[1]));
  const spots = [[x1, y1 - h], [x1, y1], [x2 - w, y1 - h], [x2 - w, y1], [x1, y2], [x1, y2 - h]]
    .map(([l, t]) => [Math.max(0, Math.min(l, width - w)), Math.max(0, Math.min(t, height - h))]);
  let best = spots[0], least = Infinity;
  for (const spot of spots) {
    const covered = placed.reduce((sum, p) => sum + overlap(spot, p), 0);
    if (covered < least) { best = spot; least = covered; }
    if (covered === 0) break;
  }
  placed.push([best[0], best[1], w, h]);
  return best;
}

function timeline(match, color) {
  const cams = [...S.cameras.values()];
  const lane = 16, left = Math.max(40, 7 * Math.max(...cams.map(c => c.name.length)) + 8), width = Math.max(220, 400 - left);
  let t0 = Infinity, t1 = -Infinity;
  for (const c of cams) {  // each camera's tracked part of its video (--max-frames, Ctrl-C may stop short)
    const tracked = c.last_tracked_frame === null || c.last_tracked_frame === undefined ? c.frames : c.last_tracked_frame + 1;
    const frames = Math.min(c.frames || Infinity, tracked || Infinity);
    if (!Number.isFinite(frames)) continue;
    t0 = Math.min(t0, c.time_offset_s); t1 = Math.max(t1, c.time_offset_s + frames / (c.fps || 10));
  }
  for (const a of match.appearances) { t0 = Math.min(t0, a.start_s); t1 = Math.max(t1, a.end_s); }
  const span = Math.max(t1 - t0, 1e-6);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'timeline');
  svg.setAttribute('viewBox', `0 0 ${left + width + 4} ${lane * cams.length + 14}`);  // scales down in a narrow card
  svg.setAttribute('width', left + width + 4); svg.setAttribute('height', lane * cams.length + 14);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    svg.append(n); return n;
  };
  cams.forEach((c, i) => {
    const y = i * lane;
    add('text', { x: left - 6, y: y + lane - 4, 'text-anchor': 'end' }, c.name);
    add('line', { x1: left, x2: left + width, y1: y + lane / 2, y2: y + lane / 2, class: 'axis' });
    for (const a of match.appearances.filter(a => a.camera === c.name)) {
      const r = add('rect', { x: left + width * (a.start_s - t0) / span, y: y + 3, height: lane - 6, fill: color,
        width: Math.max(2, width * (a.end_s - a.start_s) / span), opacity: a.score < parseFloat($('low-score').value) ? 0.4 : 1 });
      r.append(Object.assign(document.createElementNS(ns, 'title'), { textContent: `${c.name}: ${runClock(a.start_s)} – ${runClock(a.end_s)}, frames ${a.start_frame}–${a.end_frame}` }));
      r.addEventListener('click', () => seekCamera(a.camera, a.start_frame));
    }
  });
  const tick = (t) => runClock(t).replace(/^\d{4}-\d\d-\d\d /, '');  // the time of day where it is a date
  add('text', { x: left, y: lane * cams.length + 12 }, tick(t0));
  add('text', { x: left + width, y: lane * cams.length + 12, 'text-anchor': 'end' }, tick(t1));
  return svg;
}

function seekCamera(camera, frame) {
  const player = S.players.get(camera);
  if (!player) { showError(`camera ${camera}: no player (its folder is not in this run directory)`); return; }
  showView('cameras');
  player.pause();
  player.seek(frame);
  player.root.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  player.root.classList.add('flash');
  setTimeout(() => player.root.classList.remove('flash'), 900);
}

// ---------------------------------------------------------------------------------------------
async function loadCameras() {
  const cameras = await getJSON('/api/cameras');
  S.cameras = new Map(cameras.map(c => [c.name, c]));
  for (const c of cameras) {
    if (S.players.has(c.name)) S.players.get(c.name).update(c);
    else { const p = new Player(c); S.players.set(c.name, p); $('players').append(p.root); }
  }
  const ticked = new Set([...$('camera-filter').querySelectorAll('input:checked')].map(b => b.value));
  $('camera-filter').replaceChildren(...cameras.map(c => el('label', {},
    el('input', { type: 'checkbox', value: c.name, checked: ticked.has(c.name), onchange: () => loadGallery(true) }),
    ' ' + c.name + ' ')));
}

async function loadGallery(fresh) {
  if (fresh) S.galleryOffset = 0;
  const params = new URLSearchParams({ offset: S.galleryOffset, limit: 120 });
  for (const box of $('camera-filter').querySelectorAll('input:checked')) params.append('camera', box.value);
  const from = $('filter-start').value, to = $('filter-end').value;
  if (from !== '' && to !== '' && Number(from) > Number(to)) { showError(`time range: "from" ${from} s is after "to" ${to} s; swap them`); return; }
  if (from !== '') params.set('start_s', from);
  if (to !== '') params.set('end_s', to);
  let page;
  try { page = await getJSON('/api/identities?' + params); } catch (e) { showError(e.message); return; }
  const open = (o) => ask({ kind: 'identity', identity: o.identity });
  const cards = page.identities.map(o => el('div', { class: 'card' + (o.likely_person ? '' : ' unlikely'), 'data-identity': String(o.identity),
    style: `border-top-color:${o.color}`, tabIndex: 0, role: 'button', onclick: () => open(o),
    onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(o); } } },
    el('div', { class: 'thumbs' }, ...o.thumbnails.slice(0, 3).map(t => el('figure', {},
      el('img', { src: fileUrl(t.thumbnail), alt: `${t.camera} track ${t.track_id}` }), el('figcaption', { textContent: t.camera })))),
    el('div', {}, el('b', { textContent: `#${o.identity}` }), ` · ${plural(o.cameras.length, 'camera')}`),
    el('div', { class: 'meta', textContent: `${o.cameras.join(', ')} · ${runClock(o.first_s)} – ${runClock(o.last_s)} · ${plural(o.tracks.length, 'track')}` }),
    o.likely_person ? '' : el('div', { class: 'mark', textContent: 'not a person? (static box, short-lived or tiny)' })));
  for (const o of page.identities) S.colors.set(o.identity, o.color);
  if (fresh) $('gallery').replaceChildren(...cards); else $('gallery').append(...cards);
  markSelectedCard();
  S.galleryOffset = page.offset + page.identities.length;
  $('gallery-count').textContent = plural(page.total, 'identity', 'identities');
  $('gallery-more').hidden = S.galleryOffset >= page.total;
}

function showView(name) {
  for (const v of ['cameras', 'identities']) {
    $('view-' + v).hidden = v !== name;
    $('tab-' + v).classList.toggle('active', v === name);
  }
  if (name === 'identities' && !$('gallery').children.length) loadGallery(true);
}

const sameStore = (a, b) => a.generation === b.generation && a.store_id === b.store_id;  // a store made again restarts its generations

async function refresh(status) {
  const before = S.status;
  const changed = before && !sameStore(before, status);
  S.status = status;
  $('title').textContent = status.title;
  document.title = status.title;
  try { await loadCameras(); } catch (e) { S.status = before; throw e; }  // the next poll tries again (a camera folder being copied in: 409)
  if (status.generation === null) {
    showError('no track store yet in this run: the page shows it as soon as `crosscam track` or `crosscam associate` has written one');
    S.noStoreShown = true;
  } else if (S.noStoreShown) {  // the store appeared: that banner no longer holds
    S.noStoreShown = false;
    if ($('error').textContent.startsWith('no track store yet')) showError('');
  }
  if (changed) {
    $('live').textContent = status.generation === null ? 'store gone: no track store' : `store updated (generation ${status.generation})`;
    if (!$('view-identities').hidden) loadGallery(true);
    else $('gallery').replaceChildren();
    if (S.query) ask(S.query, true);
  }
}

async function poll() {
  try {
    const status = await getJSON('/api/status');
    const same = S.status && sameStore(status, S.status) && status.cameras.join() === S.status.cameras.join();
    if (!same) await refresh(status);
    if (!$('live').textContent.startsWith('store ')) $('live').textContent = `live · ${status.generation === null ? 'no store yet' : 'generation ' + status.generation}`;
  } catch (e) {
    $('live').textContent = e.status ? `server says: ${e.message}` : 'server not reachable';  // a refused token is not a down server
  }
  setTimeout(poll, POLL_MS);
}

function wire() {
  for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => showView(tab.dataset.view));
  $('gallery-more').addEventListener('click', () => loadGallery(false));
  for (const id of ['filter-start', 'filter-end']) $(id).addEventListener('change', () => loadGallery(true));
  for (const id of ['top-k', 'min-score']) $(id).addEventListener('change', () => {
    const wrong = limitsProblem();
    showError(wrong);
    if (!wrong && S.query) ask(S.query);
  });
  $('low-score').addEventListener('change', () => { if (S.result) renderResult(); });
  $('upload').addEventListener('change', () => {
    const file = $('upload').files[0];
    if (file) showPhoto(file);
    $('upload').value = '';
  });
}

// The cookie the server set carries the token from here on: out of the address bar and history
// (a redirect would lose it: a link followed from another site sends no SameSite=Strict cookie).
const params = new URLSearchParams(location.search);
if (params.has('token')) {
  params.delete('token');
  history.replaceState(null, '', location.pathname + (params.toString() ? `?${params}` : '') + location.hash);
}
wire();
window.addEventListener('popstate', askFromAddress);
poll().then(askFromAddress);
