// The page: sign in with an API key, send a photo, follow the job live, show the avatar.
// Plain ES modules, no framework, no build step. Every call goes to this service's own API.
const KEY_STORE = "avatar.apiKey";
const FINAL = new Set(["completed", "failed", "cancelled"]);
const STAGE_NAMES = {
  queued: "waiting for a worker", fetch: "photo", load: "read the photo", detect: "find the person",
  segment: "cut out the person", fit: "fit the body", export: "meshes and texture", measure: "measure",
  render: "previews", upload: "store the files", done: "done",
};
// how the page names the API's weight sources (one it does not know is shown as the API names it)
const WEIGHT_SOURCE_NAMES = { reported: "reported by the person", scale: "weighed on a scale" };
// what to do about a failed job, by its error code (the message says what happened)
const ADVICE = {
  body_truncated: "Step back so the whole person is in the photo, from the top of the head to the feet, and send it again.",
  no_person: "Send a photo of one person standing, the whole body in view, not too small in the picture.",
  unsupported_image_type: "Send a JPEG, PNG or WebP photo.",
  invalid_image: "The file could not be read as a photo: take or export it again as JPEG or PNG.",
  image_too_large: "Send a smaller photo (at most 50 megapixels).",
  image_too_small: "Send a larger photo: the person should be several hundred pixels tall.",
  photo_not_found: "Upload the photo again.",
  timeout: "The service was too slow this time: try again, or ask the operator whether the worker is busy.",
  deadline_exceeded: "The job waited too long: check that a worker runs (avatar doctor), then try again.",
  worker_lost: "The worker stopped while making it: try again; if it happens again, tell the operator.",
  internal_error: "Try again; if it fails again, the operator's logs say why.",
};

const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem(KEY_STORE), limits: null, viewer: null, user: null,
                passport: null, follow: null, photoFile: null, photoUrl: null };

class Unauthorized extends Error {}

// ---------------------------------------------------------------- the API

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.key}`, ...(options.headers || {}) };
  const r = await fetch(path, { ...options, headers });
  if (r.status === 401) {
    const msg = await errorMessage(r);
    signOut(`The API key was refused (${msg}). Enter a valid key.`);
    throw new Unauthorized(msg);
  }
  if (!r.ok) throw new Error(await errorMessage(r));
  return r.status === 204 ? null : r.json();
}

async function errorMessage(r) {
  try {
    const body = await r.json();
    return body.error ? body.error.message : `HTTP ${r.status}`;
  } catch {
    return `HTTP ${r.status}`;
  }
}

// ---------------------------------------------------------------- sign in

function signOut(message = "") {
  localStorage.removeItem(KEY_STORE);
  state.key = null;
  if (state.follow) state.follow.abort();
  $("app").hidden = true;
  $("account").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

async function signIn(key) {
  state.key = key;
  const people = await api("api/avatars"); // throws Unauthorized (and shows the sign-in) for a bad key
  localStorage.setItem(KEY_STORE, key);
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("account").hidden = false;
  $("account-label").textContent = `Signed in (key ${key.slice(0, 8)}…)`;
  renderPeople(people);
}

// ---------------------------------------------------------------- the form

async function loadLimits() {
  const r = await fetch("limits");
  state.limits = await r.json();
  const L = state.limits;
  for (const [id, range] of [["height", L.height_cm], ["weight", L.weight_kg]]) {
    $(id).min = range.min;
    $(id).max = range.max;
  }
  $("gender").replaceChildren(...L.genders.map((g) => new Option(g, g)));
  $("clothing").replaceChildren(...L.clothing.map((c) => new Option(c, c)));
  $("weight-source").replaceChildren(...L.weight_sources.map((w) => new Option(WEIGHT_SOURCE_NAMES[w] || w, w)));
  $("photo").accept = L.photo_types.join(",");
}

function weightMessage(raw) {
  const L = state.limits;
  const range = rangeMessage(L.weight_kg, raw, false);
  if (range) return range;
  return raw === "" && $("weight-source").value === "scale" ? L.weight_source_message : "";
}

function checkField(id, check) {
  const message = check($(id).value.trim());
  $(`${id}-error`).textContent = message || "";
  $(id).setAttribute("aria-invalid", message ? "true" : "false");
  return !message;
}

function rangeMessage(range, raw, required) {
  if (raw === "") return required ? "required" : "";
  const v = Number(raw);
  if (!Number.isFinite(v) || v < range.min || v > range.max) return range.message.replace("{value}", raw);
  return "";
}

function checkPhoto(file) {
  const L = state.limits;
  if (!file) return "choose a photo first";
  if (file.type && !L.photo_types.includes(file.type)) return L.photo_type_message;
  if (file.size > L.photo_max_bytes) return L.photo_size_message;
  return "";
}

function validForm() {
  const L = state.limits;
  const ok = [
    checkField("user-id", (v) => (new RegExp(L.user_id_pattern).test(v) ? "" : L.user_id_message)),
    checkField("height", (v) => rangeMessage(L.height_cm, v, true)),
    checkField("weight", weightMessage),
  ].every(Boolean);
  const photoMessage = checkPhoto(state.photoFile);
  $("photo-error").textContent = photoMessage;
  return ok && !photoMessage;
}

function choosePhoto(file) {
  state.photoFile = file || null;
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = file ? URL.createObjectURL(file) : null;
  $("photo-preview").hidden = !file;
  if (file) $("photo-preview").src = state.photoUrl;
  $("photo-error").textContent = file ? checkPhoto(file) : "";
}

async function submitCreate(event) {
  event.preventDefault();
  $("create-error").textContent = "";
  if (!validForm()) return;
  const button = $("create-button");
  button.disabled = true;
  try {
    const form = new FormData();
    form.append("file", state.photoFile, state.photoFile.name || "photo.jpg");
    const photo = await api("api/photos", { method: "POST", body: form });
    const weight = $("weight").value.trim();
    const body = { user_id: $("user-id").value.trim(), photo_url: photo.photo_url,
                   height: Number($("height").value), gender: $("gender").value,
                   clothing: $("clothing").value, weight_source: $("weight-source").value };
    if (weight) body.weight = Number(weight);
    const job = await api("api/avatar/create", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    state.jobPhoto = { user: body.user_id, url: state.photoUrl };
    setHash(`job=${job.job_id}`);
    await followJob(job.job_id, body.user_id);
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("create-error").textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- following a job

async function followJob(jobId, userId) {
  if (state.follow) state.follow.abort();
  const ctl = new AbortController();
  state.follow = ctl;
  $("failure").hidden = true;
  $("result").hidden = true;
  $("progress").hidden = false;
  $("progress-user").textContent = userId || "";
  $("stages").replaceChildren();
  state.stages = [];
  $("cancel").onclick = () => api(`api/avatar/cancel/${jobId}`, { method: "POST" }).catch(() => {});
  let last = null;
  const onDoc = (doc) => { last = doc; showProgress(doc); };
  try {
    $("progress-via").textContent = "Live (server-sent events).";
    await followEvents(jobId, onDoc, ctl.signal);
  } catch (e) {
    if (e instanceof Unauthorized || ctl.signal.aborted) return;
    console.warn("events stream failed; polling instead", e);
  }
  if (ctl.signal.aborted) return;
  if (!last || !FINAL.has(last.status)) {
    $("progress-via").textContent = "Updated every second (polling).";
    last = await pollJob(jobId, onDoc, ctl.signal);
  }
  if (!last || ctl.signal.aborted) return;
  await finish(last);
}

async function followEvents(jobId, onDoc, signal) {
  // EventSource cannot send the Authorization header: read the stream with fetch instead
  const r = await fetch(`api/avatar/events/${jobId}`, {
    headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" }, signal });
  if (r.status === 401) {
    signOut(`The API key was refused (${await errorMessage(r)}). Enter a valid key.`);
    throw new Unauthorized();
  }
  if (!r.ok || !r.body) throw new Error(`events: HTTP ${r.status}`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let m;
    while ((m = /(\r\n|\r|\n){2}/.exec(buffer))) {
      const block = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      const data = block.split(/\r\n|\r|\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) onDoc(JSON.parse(data));
    }
  }
}

async function pollJob(jobId, onDoc, signal) {
  for (;;) {
    const doc = await api(`api/avatar/status/${jobId}`, { signal });
    onDoc(doc);
    if (FINAL.has(doc.status)) return doc;
    await new Promise((ok) => setTimeout(ok, 1000));
    if (signal.aborted) return null;
  }
}

function showProgress(doc) {
  $("progress-user").textContent = doc.user_id;
  $("progress-bar").value = doc.progress;
  $("progress-pct").textContent = `${doc.progress} %`;
  $("progress-message").textContent = doc.message;
  const stage = doc.status === "queued" ? "queued" : doc.stage;
  const now = performance.now();
  const current = state.stages[state.stages.length - 1];
  if (stage && (!current || current.stage !== stage)) {
    if (current) current.ms = now - current.t0;
    state.stages.push({ stage, t0: now, ms: null });
  }
  renderStages(FINAL.has(doc.status));
}

let ticking = null;

function renderStages(final) {
  // the running stage's time counts up between events (the fit has none for half a minute)
  clearTimeout(ticking);
  if (!final) ticking = setTimeout(() => renderStages(false), 500);
  const now = performance.now();
  $("stages").replaceChildren(...state.stages.map((s, i) => {
    const li = document.createElement("li");
    const running = i === state.stages.length - 1 && !final;
    li.className = running ? "running" : "done";
    const ms = s.ms ?? (running ? now - s.t0 : null);
    li.textContent = `${STAGE_NAMES[s.stage] || s.stage}${ms != null ? ` ${(ms / 1000).toFixed(1)} s` : ""}`;
    if (running) li.setAttribute("aria-current", "step");
    return li;
  }));
}

async function finish(doc) {
  $("progress").hidden = true;
  if (doc.status === "completed") {
    setHash(`user=${encodeURIComponent(doc.user_id)}`);
    await showPerson(doc.user_id, doc);
  } else {
    $("failure").hidden = false;
    $("failure-title").textContent = doc.status === "cancelled" ? "The job was cancelled" : "The avatar could not be made";
    const err = doc.error || { code: "", message: doc.message };
    $("failure-message").textContent = err.message || doc.message;
    $("failure-advice").textContent = doc.status === "cancelled" ? "Send the photo again to make it."
      : (ADVICE[err.code] || "Check the photo and the numbers, then try again.");
  }
  refreshPeople();
}

// ---------------------------------------------------------------- a person's avatar

async function showPerson(userId, job = null) {
  const passport = await api(`api/avatar/${encodeURIComponent(userId)}`);
  state.user = userId;
  state.passport = passport;
  if (!job && (passport.status === "queued" || passport.status === "processing") && passport.latest_job_id) {
    return followJob(passport.latest_job_id, userId);
  }
  if (!passport.avatar_url) {
    $("result").hidden = true;
    return;
  }
  if (!job && passport.avatar_job_id) job = await api(`api/avatar/status/${passport.avatar_job_id}`);
  $("result").hidden = false;
  $("result-user").textContent = userId;
  const photo = state.jobPhoto && state.jobPhoto.user === userId ? state.jobPhoto.url : null;
  $("photo-figure").hidden = !photo;
  if (photo) $("result-photo").src = photo;
  $("result-overlay").src = passport.pipeline_files["overlay.png"] || "";
  renderFit(job ? job.fit : null);
  renderMeasurements(passport);
  renderDownloads(passport.pipeline_files);
  renderTimes(job ? job.timings : null);
  await showModel(passport.avatar_url);
}

async function showModel(url) {
  $("viewer-status").textContent = "Loading the 3D model…";
  try {
    if (!state.viewer) {
      const { AvatarViewer } = await import("./viewer.js");
      state.viewer = new AvatarViewer($("viewer"));
    }
    await state.viewer.load(url);
    $("viewer").dataset.loaded = "true";
    $("viewer-status").textContent = "Drag or use the arrow keys to turn, the wheel or + and - to zoom.";
  } catch (e) {
    $("viewer-status").textContent = `The 3D view is not available here (${e.message}); download the GLB below.`;
  }
}

function renderFit(fit) {
  // what the fit made of the person beside what was typed (the status's FitSummary; null for older jobs)
  fit = fit || {};
  const parts = [];
  if (fit.mass_kg != null) {
    parts.push(`Fitted mass ${fit.mass_kg.toFixed(1)} kg`
      + (fit.weight_kg_typed == null ? " (no weight typed)"
        : fit.weight_source === "scale" ? ` (typed ${fit.weight_kg_typed} kg, weighed on a scale)`
        : ` (typed ${fit.weight_kg_typed} kg)`));
  }
  if (fit.clothing_said) {
    const offset = fit.cloth_offset_cm ? ` (${fit.cloth_offset_cm.hips.toFixed(1)} cm off the body at the hips)` : "";
    parts.push((!fit.clothing_read ? `clothing said ${fit.clothing_said}, not read from this photo`
      : fit.clothing_read === fit.clothing_said ? `clothing read as ${fit.clothing_read}, as said`
      : `clothing said ${fit.clothing_said}, read as ${fit.clothing_read} from the silhouette`) + offset);
  }
  $("fit-summary").textContent = parts.join(" · ");
  $("fit-summary").hidden = !parts.length;
}

function renderMeasurements(p) {
  const names = state.limits.measurements.filter((n) => n in p.measurements || n in p.manual_measurements);
  $("measure-rows").replaceChildren(...names.map((name) => {
    const tr = document.createElement("tr");
    const manual = p.manual_measurements[name];
    if (manual != null) tr.className = "corrected";
    const label = name.replace(/_/g, " ");
    const fitted = p.measurements[name];
    tr.innerHTML = `<th scope="row"></th><td class="num"></td><td><input type="number" step="0.1" inputmode="decimal"></td><td class="num used"></td>`;
    tr.children[0].textContent = label;
    tr.children[1].textContent = fitted != null ? fitted.toFixed(1) : "–";
    const input = tr.querySelector("input");
    input.name = name;
    input.id = `m-${name}`;
    input.setAttribute("aria-label", `${label} correction (cm)`);
    input.min = state.limits.measurement_cm.min;
    input.max = state.limits.measurement_cm.max;
    input.value = manual != null ? manual : "";
    input.dataset.saved = input.value;
    const used = p.effective_measurements[name];
    tr.children[3].textContent = used != null ? used.toFixed(1) : "–";
    if (manual != null) {
      const mark = document.createElement("span");
      mark.className = "badge";
      mark.textContent = "corrected";
      tr.children[3].append(" ", mark);
    }
    return tr;
  }));
}

async function saveMeasurements(event) {
  event.preventDefault();
  $("measure-error").textContent = "";
  const range = state.limits.measurement_cm;
  const changes = {};
  for (const input of $("measure-rows").querySelectorAll("input")) {
    const raw = input.value.trim();
    if (raw === input.dataset.saved) continue;
    if (raw === "") { changes[input.name] = null; continue; }
    const v = Number(raw);
    if (!Number.isFinite(v) || v < range.min || v > range.max) {
      $("measure-error").textContent = range.message.replace("{name}", input.name).replace("{value}", raw);
      input.focus();
      return;
    }
    changes[input.name] = v;
  }
  if (!Object.keys(changes).length) {
    $("measure-status").textContent = "Nothing changed.";
    return;
  }
  try {
    const p = await api(`api/measurements/${encodeURIComponent(state.user)}`, {
      method: "PATCH", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ measurements: changes }) });
    state.passport = p;
    renderMeasurements(p);
    $("measure-status").textContent = "Saved.";
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("measure-error").textContent = e.message;
  }
}

function renderDownloads(files) {
  $("downloads").replaceChildren(...Object.keys(files).sort().map((name) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = files[name];
    a.download = name;
    a.textContent = name;
    li.append(a);
    return li;
  }));
}

function renderTimes(timings) {
  const stages = (timings && timings.stages_ms) || {};
  const rows = Object.entries(stages).map(([name, ms]) => [STAGE_NAMES[name] || name, ms]);
  if (timings && timings.total_ms != null) rows.push(["pipeline in all", timings.total_ms]);
  if (timings && timings.wall_ms != null) rows.push(["with the photo and the files", timings.wall_ms]);
  $("times").replaceChildren(...rows.map(([name, ms]) => {
    const tr = document.createElement("tr");
    tr.innerHTML = "<th scope=\"row\"></th><td class=\"num\"></td>";
    tr.children[0].textContent = name;
    tr.children[1].textContent = `${(ms / 1000).toFixed(1)} s`;
    return tr;
  }));
}

// ---------------------------------------------------------------- earlier avatars

async function refreshPeople() {
  try {
    renderPeople(await api("api/avatars"));
  } catch (e) {
    if (!(e instanceof Unauthorized)) console.warn(e);
  }
}

function renderPeople(people) {
  $("history-empty").hidden = people.length > 0;
  $("people").replaceChildren(...people.map((p) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "person";
    const preview = p.pipeline_files["preview.png"];
    if (preview) {
      const img = document.createElement("img");
      img.src = preview;
      img.alt = "";
      button.append(img);
    }
    const text = document.createElement("span");
    const when = new Date(p.updated_at.endsWith("Z") || p.updated_at.includes("+") ? p.updated_at : `${p.updated_at}Z`);
    text.innerHTML = "<strong></strong><br><small></small>";
    text.querySelector("strong").textContent = p.user_id;
    text.querySelector("small").textContent = `${p.status} · ${when.toLocaleString()}`;
    button.append(text);
    button.setAttribute("aria-label", `Open the avatar of ${p.user_id} (${p.status})`);
    button.onclick = () => { setHash(`user=${encodeURIComponent(p.user_id)}`); route(); };
    li.append(button);
    return li;
  }));
}

// ---------------------------------------------------------------- start

function setHash(hash) {
  // pushState, not location.hash: the page already shows what the new address names (no hashchange)
  history.pushState(null, "", `#${hash}`);
}

async function route() {
  if (!state.key) return;
  const hash = new URLSearchParams(location.hash.slice(1));
  try {
    if (hash.get("job")) {
      await followJob(hash.get("job"), "");
    } else if (hash.get("user")) {
      $("failure").hidden = true;
      $("progress").hidden = true;
      await showPerson(hash.get("user"));
    }
  } catch (e) {
    if (!(e instanceof Unauthorized)) {
      $("failure").hidden = false;
      $("failure-title").textContent = "Not found";
      $("failure-message").textContent = e.message;
      $("failure-advice").textContent = "Pick one of the earlier avatars, or make a new one.";
    }
  }
}

function wireDrop() {
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) choosePhoto(e.dataTransfer.files[0]);
  });
}

async function start() {
  await loadLimits();
  $("user-id").value = `person-${new Date().toISOString().slice(0, 10)}-${Math.random().toString(36).slice(2, 6)}`;
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      await signIn($("api-key").value.trim());
      await route();
    } catch (err) {
      if (!(err instanceof Unauthorized)) $("sign-in-error").textContent = err.message;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("create-form").addEventListener("submit", submitCreate);
  $("photo").addEventListener("change", (e) => choosePhoto(e.target.files[0]));
  $("camera").addEventListener("change", (e) => choosePhoto(e.target.files[0]));
  $("measure-form").addEventListener("submit", saveMeasurements);
  for (const b of document.querySelectorAll("[data-view]")) {
    b.addEventListener("click", () => state.viewer && state.viewer.view(b.dataset.view === "side" ? "side" : "front"));
  }
  window.addEventListener("hashchange", route);
  wireDrop();
  if (!state.key) return signOut();
  try {
    await signIn(state.key);
    await route();
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("sign-in-error").textContent = e.message;
  }
}

start();
