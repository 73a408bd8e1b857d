// The report's gallery: cards loaded page by page from data/ (see annotators/report_gallery.py).
const state = {index: null, pages: new Map(), shown: [], page: 0, perPage: 24, hidden: new Set(), zoom: 1};
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
  '"': '&quot;', "'": '&#39;'}[c]));

async function loadPage(number) {
  if (!state.pages.has(number)) {
    state.pages.set(number, fetch(`data/cards-${String(number).padStart(5, '0')}.json`).then((r) => r.json()));
  }
  return state.pages.get(number);
}

function boxes(card, scale) {
  const colors = state.index.colors;
  const rects = [];
  for (const c of card.candidates) {
    c.detections.forEach((d) => {
      if (!d.voted || !d.box) return;
      const i = state.index.detectors.indexOf(d.detector);
      const [x1, y1, x2, y2] = d.box;
      rects.push(`<rect class="det det-${i}" data-detector="${esc(d.detector)}" x="${x1}" y="${y1}" ` +
        `width="${x2 - x1}" height="${y2 - y1}" fill="none" stroke="${colors[d.detector]}" ` +
        `stroke-width="${2 * scale}"><title>${esc(d.detector)} ${esc(c.phrase)}</title></rect>`);
    });
    if (c.fused_box) {
      const [x1, y1, x2, y2] = c.fused_box;
      rects.push(`<rect class="fused ${c.decision}" x="${x1}" y="${y1}" width="${x2 - x1}" height="${y2 - y1}" ` +
        `fill="none" stroke="#fff" stroke-dasharray="${4 * scale}" stroke-width="${1.5 * scale}"></rect>`);
    }
  }
  return `<svg viewBox="0 0 ${card.width} ${card.height}" preserveAspectRatio="none">${rects.join('')}</svg>`;
}

function cardHtml(card) {
  const lines = card.candidates.map((c) => {
    const voters = c.detections.filter((d) => d.voted).map((d) =>
      `<span class="swatch" style="background:${state.index.colors[d.detector]}"></span>${esc(d.detector)} ` +
      (d.score === null ? 'no score' : d.score.toFixed(2))).join(' ');
    const iou = c.box_iou === null ? '-' : c.box_iou.toFixed(2);
    const review = c.review ? ` reviewed by ${esc(c.review.reviewer)}` : '';
    return `<div class="candidate"><b>${esc(c.phrase)}</b> <span class="${c.decision}">` +
      `${c.decision.replace('_', ' ')}</span> (${esc(c.reason)}${review}) box IoU ${iou}<br>${voters}` +
      `<div class="detail">${esc(c.detail)}</div></div>`;
  }).join('');
  return `<div class="card" data-card="${card.id}"><div class="frame" data-card="${card.id}">` +
    `<img loading="lazy" src="${card.image}" alt="${esc(card.image_key)}">${boxes(card, card.width / 320)}</div>` +
    `<div>${esc(card.dataset)} / ${esc(card.image_key)}</div>${lines}</div>`;
}

function matches(entry, want) {
  return (!want.dataset || entry.dataset === want.dataset) && (!want.phrase || entry.phrases.includes(want.phrase)) &&
    (!want.decision || entry.decisions.includes(want.decision));
}

function applyFilters() {
  const want = {dataset: $('filter-dataset').value, phrase: $('filter-phrase').value,
                decision: $('filter-decision').value};
  const sort = $('sort').value;
  let shown = state.index.cards.filter((e) => matches(e, want));
  const key = {iou: (e) => e.min_iou ?? 2, score: (e) => -(e.max_score ?? -1)}[sort];
  if (key) shown = [...shown].sort((a, b) => key(a) - key(b) || a.id - b.id);
  state.shown = shown;
  state.page = 0;
  $('shown-count').textContent = shown.length;
  render();
}

async function render() {
  const start = state.page * state.perPage;
  const entries = state.shown.slice(start, start + state.perPage);
  const pages = await Promise.all([...new Set(entries.map((e) => e.page))].map(async (p) => [p, await loadPage(p)]));
  const byId = new Map(pages.flatMap(([, cards]) => cards.map((c) => [c.id, c])));
  $('gallery').innerHTML = entries.map((e) => cardHtml(byId.get(e.id))).join('');
  const last = Math.max(Math.ceil(state.shown.length / state.perPage), 1);
  $('page-label').textContent = `page ${state.page + 1} of ${last}`;
  $('prev').disabled = state.page === 0;
  $('next').disabled = state.page + 1 >= last;
  $('gallery').dataset.ready = 'yes';
}

function toggleDetector(i, on) {
  document.body.classList.toggle(`hide-det-${i}`, !on);
}

async function openZoom(id) {
  const entry = state.index.cards.find((e) => e.id === id);
  const card = (await loadPage(entry.page)).find((c) => c.id === id);
  $('zoom-title').textContent = `${card.dataset} / ${card.image_key} (${card.width} x ${card.height})`;
  $('zoom').innerHTML = `<img src="${card.image}" width="${card.width}" height="${card.height}">` +
    boxes(card, 1);
  $('zoom').style.width = `${card.width}px`;
  setZoom(1);
  $('modal').hidden = false;
}

function setZoom(level) {
  state.zoom = Math.min(Math.max(level, 0.25), 16);
  $('zoom').style.transform = `scale(${state.zoom})`;
  $('zoom-level').textContent = `${Math.round(state.zoom * 100)}%`;
}

async function start() {
  state.index = await (await fetch('data/index.json')).json();
  state.perPage = state.index.per_page;
  const css = state.index.detectors.map((_, i) => `body.hide-det-${i} .det-${i}{display:none}`).join('\n');
  document.head.insertAdjacentHTML('beforeend', `<style>${css}</style>`);
  $('legend').innerHTML = state.index.detectors.map((name, i) => `<label><input type="checkbox" checked ` +
    `data-detector-index="${i}"><span class="swatch" style="background:${state.index.colors[name]}"></span>` +
    `${esc(name)}</label>`).join('');
  $('legend').addEventListener('change', (e) => toggleDetector(e.target.dataset.detectorIndex, e.target.checked));
  for (const id of ['filter-dataset', 'filter-phrase', 'filter-decision', 'sort']) {
    $(id).addEventListener('change', applyFilters);
  }
  $('prev').addEventListener('click', () => { state.page -= 1; render(); });
  $('next').addEventListener('click', () => { state.page += 1; render(); });
  $('gallery').addEventListener('click', (e) => {
    const frame = e.target.closest('.frame');
    if (frame) openZoom(Number(frame.dataset.card));
  });
  $('zoom-in').addEventListener('click', () => setZoom(state.zoom * 2));
  $('zoom-out').addEventListener('click', () => setZoom(state.zoom / 2));
  $('zoom-reset').addEventListener('click', () => setZoom(1));
  $('zoom-close').addEventListener('click', () => { $('modal').hidden = true; });
  $('viewport').addEventListener('wheel', (e) => { e.preventDefault(); setZoom(state.zoom * (e.deltaY < 0 ? 1.25 : 0.8)); },
    {passive: false});
  applyFilters();
}

start();
