// The window: draws the core's snapshot, applies its live events and calls
// its commands. Errors from commands arrive as {code, message}.
"use strict";

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const $ = (id) => document.getElementById(id);
const items = new Map();
// Files seen in the watched folder and not taken yet (not in `items`).
let waiting = [];
let settings = null;
let signedIn = false;
let online = true;
// The account as the server last described it (GET /api/v1/me).
let profile = null;

const STAGES = {
  pending: "Waiting to upload",
  extracting: "Taking out the sound",
  uploading: "Uploading",
  queued: "Waiting for the server",
  converting: "Converting",
  downloading: "Downloading the MP3",
  done: "Done",
  failed: "Failed",
  duplicate: "Already converted",
};

const WAITING = {
  copying: "Waiting until the copy is finished",
  paused: "Paused: converted when you resume",
};

function message(err) {
  if (err && typeof err === "object" && "message" in err) return err.message;
  return String(err);
}

// A message in plain words, with the technical text behind "Details".
function errorContent(err) {
  const text = document.createElement("span");
  text.textContent = message(err);
  const detail = err && typeof err === "object" ? err.detail : null;
  if (!detail) return [text];
  return [text, detailsNode(detail)];
}

function detailsNode(detail) {
  const box = document.createElement("details");
  box.className = "detail";
  const summary = document.createElement("summary");
  summary.textContent = "Details";
  const pre = document.createElement("pre");
  pre.textContent = detail;
  box.append(summary, pre);
  return box;
}

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3500);
}

function showError(id, err) {
  const el = $(id);
  el.replaceChildren(...(err ? errorContent(err) : []));
  el.hidden = !err;
  if (err) el.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------- rendering

function render(snapshot) {
  settings = snapshot.settings;
  signedIn = snapshot.signed_in;
  online = snapshot.online;
  items.clear();
  for (const item of snapshot.items) items.set(item.id, item);
  waiting = snapshot.waiting ?? [];
  if (snapshot.account) {
    $("email").value ||= snapshot.account.email;
  }
  $("server").value = settings.server_url;
  $("watch-dir").value = settings.watch_dir ?? "";
  $("out-dir").value = settings.out_dir ?? "";
  $("signin").hidden = signedIn;
  $("app").hidden = !signedIn;
  renderStatus();
  renderItems();
  if (!signedIn) {
    profile = null;
    renderProfile();
    checkRegistration();
    $("password").focus();
  } else if (!profile) {
    loadProfile();
  }
}

// ---------------------------------------------------------------- account

async function loadProfile() {
  if (!signedIn) return;
  try {
    profile = await invoke("account");
  } catch (_) {
    // Offline: the banner waits for the next try. A session the server
    // refused comes back as the engine's "signed_out" event.
    return;
  }
  renderProfile();
}

function renderProfile() {
  $("confirm-banner").hidden = !(signedIn && profile && !profile.email_confirmed);
  if (profile) $("confirm-email").textContent = profile.email;
}

// The address may be confirmed in a browser at any time: look again when
// the window comes back to the front, and now and then.
window.addEventListener("focus", loadProfile);
setInterval(loadProfile, 60_000);

function size(bytes) {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  return megabytes(bytes);
}

function renderAccount() {
  const rows = [["Email", profile.email],
    ["Address", profile.email_confirmed ? "Confirmed"
      : "Not confirmed yet: no emails until you open the link we sent"]];
  const q = profile.quotas;
  if (q) {
    rows.push(["Videos converting", `${q.jobs_in_flight.used} of ${q.jobs_in_flight.limit} at once`],
      ["Videos this hour", `${q.jobs_per_hour.used} of ${q.jobs_per_hour.limit}`],
      ["Space on the server", `${size(q.stored_bytes.used)} of ${size(q.stored_bytes.limit)}`]);
  }
  $("account-list").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  $("password-username").value = profile.email;
}

// A yes/no question in the window's own dialog; resolves to true for yes.
function ask(text, yes) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = yes;
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
    $("confirm-no").focus();
  });
}

$("confirm-resend").addEventListener("click", async () => {
  $("confirm-resend").disabled = true;
  try {
    await invoke("resend_confirmation");
    $("confirm-message").textContent = `Sent. Open the link in the email to ${profile?.email ?? "you"}.`;
  } catch (err) {
    $("confirm-message").textContent = err?.code === "rate_limited"
      ? "A link went out less than a minute ago (five at most a day): look in your inbox and spam folder, or try again later."
      : message(err);
  } finally {
    $("confirm-resend").disabled = false;
  }
});

$("account-button").addEventListener("click", async () => {
  for (const id of ["account-error", "password-error", "delete-error"]) showError(id, null);
  try {
    profile = await invoke("account");
    renderProfile();
  } catch (err) {
    if (!signedIn) return;
    if (!profile) { toast(message(err)); return; }
    showError("account-error", `Showing what was known before: ${message(err)}`);
  }
  renderAccount();
  $("account").showModal();
});
$("account-close").addEventListener("click", () => $("account").close());

// A submit (the button or Enter in either field) changes the password.
$("password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("password-error", null);
  $("password-change").disabled = true;
  try {
    await invoke("change_password", { current: $("current-password").value, new: $("new-password").value });
    $("current-password").value = "";
    $("new-password").value = "";
    toast("Password changed. Your other devices are signed out.");
  } catch (err) {
    showError("password-error", err);
  } finally {
    $("password-change").disabled = false;
  }
});

$("signout-everywhere").addEventListener("click", async () => {
  if (!await ask("Sign out everywhere? Every device signed in to this account, this app too, will need the password again.",
    "Sign out everywhere")) return;
  try {
    await invoke("sign_out_everywhere");
    $("account").close();
    showError("signin-error", "Signed out everywhere. Sign in again to go on; your queue is kept.");
    await refresh();
  } catch (err) {
    showError("account-error", err);
  }
});

$("delete-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("delete-error", null);
  const email = profile?.email ?? "this account";
  if (!await ask(`Delete ${email} for good, with every video and MP3 of it on the server? This cannot be undone.`,
    "Delete the account")) return;
  try {
    await invoke("delete_account", { password: $("delete-password").value });
    $("delete-password").value = "";
    $("account").close();
    $("email").value = "";
    showError("signin-error", `The account ${email} is deleted. The MP3s in your MP3 folder are still there.`);
    await refresh();
  } catch (err) {
    showError("delete-error", err);
  }
});

// "Create an account" shows only when the server says registration is open.
let registrationCheckedFor = null;
async function checkRegistration() {
  const server = $("server").value.trim();
  if (server === registrationCheckedFor) {
    // Typed away and back: what was found for this address still holds.
    $("register-button").hidden = $("register-button").dataset.open !== "yes" || registering;
    return;
  }
  registrationCheckedFor = server;
  let open = false;
  try {
    open = await invoke("registration_open", { server });
  } catch (_) {
    // Unreachable or not a server of ours: no link.
  }
  if ($("server").value.trim() === server) {
    $("register-button").dataset.open = open ? "yes" : "no";
    $("register-button").hidden = !open || registering;
  }
}

let serverTyping;
$("server").addEventListener("input", () => {
  // Whether the last address takes accounts says nothing about this one:
  // no link until this one answers.
  $("register-button").hidden = true;
  clearTimeout(serverTyping);
  serverTyping = setTimeout(checkRegistration, 400);
});

function renderStatus() {
  const status = $("status");
  let text = "Online", cls = "online";
  if (!signedIn) { text = "Signed out"; cls = "signedout"; }
  else if (!online) { text = "Offline: files wait"; cls = "offline"; }
  else if (settings?.paused) { text = "Paused"; cls = "paused"; }
  status.textContent = text;
  status.className = `pill ${cls}`;
  $("pause-button").textContent = settings?.paused ? "Resume" : "Pause";
}

const WITH_PROGRESS = ["extracting", "uploading", "converting", "downloading"];

function megabytes(bytes) {
  // Under 0.1 MB in kB: "0.0 MB" reads as nothing at all.
  if (bytes < 1e5) return `${Math.max(1, Math.round(bytes / 1e3))} kB`;
  const mb = bytes / 1e6;
  return `${mb < 10 ? mb.toFixed(1) : Math.round(mb)} MB`;
}

// "uploading 9.8 MB instead of 358 MB" when only the audio travels, and
// only when that saved something worth saying.
function sentText(item) {
  if (item.upload_bytes == null || item.upload_bytes >= item.size * 0.9) return "";
  const sent = megabytes(item.upload_bytes), whole = megabytes(item.size);
  return sent === whole ? "" : ` ${sent} instead of ${whole}`;
}

// Progress is shown once something moved: a stage that starts at 0% and
// has nothing to report (a server that sends no progress) says "…".
function hasProgress(item) {
  return WITH_PROGRESS.includes(item.stage) && item.progress > 0;
}

function stageText(item) {
  const label = STAGES[item.stage] ?? item.stage;
  if (item.stage === "failed") return `${label}: ${item.error ?? "the reason is not known."}`;
  if (item.stage === "duplicate") return item.note ?? label;
  const percent = hasProgress(item) ? ` ${Math.round(item.progress * 100)}%` : "…";
  if (item.stage === "uploading") return `${label}${sentText(item)}${percent}`;
  if (WITH_PROGRESS.includes(item.stage)) return `${label}${percent}`;
  if (item.stage === "done" && sentText(item)) return `${label} (sent${sentText(item)})`;
  return label;
}

function button(text, action, id) {
  const el = document.createElement("button");
  el.type = "button";
  el.textContent = text;
  el.dataset.action = action;
  el.dataset.id = id;
  return el;
}

function waitingRow(file) {
  const li = document.createElement("li");
  li.className = "job waiting";
  li.dataset.stage = "waiting";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = file.name;
  const stage = document.createElement("div");
  stage.className = "stage waiting";
  stage.textContent = WAITING[file.reason] ?? "Waiting";
  const info = document.createElement("div");
  info.className = "info";
  info.append(name, stage);
  li.append(info);
  return li;
}

// A file under the watched folder is named by its place there, so two
// clip.mp4 in different subfolders can be told apart.
function displayName(item) {
  const dir = settings?.watch_dir?.replace(/\/+$/, "");
  return dir && item.path.startsWith(`${dir}/`) ? item.path.slice(dir.length + 1) : item.name;
}

function itemRow(item) {
  const li = document.createElement("li");
  li.className = `job ${item.stage}`;
  li.dataset.id = item.id;
  li.dataset.stage = item.stage;
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = displayName(item);
  const stage = document.createElement("div");
  stage.className = `stage ${item.stage}`;
  stage.textContent = stageText(item);
  const info = document.createElement("div");
  info.className = "info";
  info.append(name, stage);
  if (item.stage === "failed" && item.detail) info.append(detailsNode(item.detail));
  if (item.note && item.stage !== "duplicate") {
    const note = document.createElement("div");
    note.className = "note";
    note.textContent = item.note;
    info.append(note);
  }
  if (WITH_PROGRESS.includes(item.stage)) {
    const bar = document.createElement("progress");
    bar.max = 1;
    // No value: an "under way" bar, until there is progress to show.
    if (hasProgress(item)) bar.value = item.progress;
    bar.setAttribute("aria-label", `${displayName(item)}: ${stageText(item)}`);
    info.append(bar);
  }
  li.append(info);
  const actions = document.createElement("div");
  actions.className = "actions";
  if (item.stage === "failed" && item.retryable) actions.append(button("Retry", "retry", item.id));
  if (item.stage === "duplicate") actions.append(button("Convert again", "again", item.id));
  if (item.stage === "done") {
    actions.append(button("Open MP3", "open", item.id), button("Show in folder", "reveal", item.id));
  }
  const finished = ["done", "failed", "duplicate"].includes(item.stage);
  actions.append(button(finished ? "Remove from list" : "Stop and remove", "remove", item.id));
  li.append(actions);
  return li;
}

function renderItems() {
  const list = $("jobs");
  const sorted = [...items.values()].sort((a, b) => b.id - a.id);
  list.replaceChildren(...waiting.map(waitingRow), ...sorted.map(itemRow));
  $("empty").hidden = items.size + waiting.length > 0;
  const count = (stage) => sorted.filter((i) => i.stage === stage).length;
  const working = sorted.length - count("done") - count("failed") - count("duplicate") + waiting.length;
  $("counts").textContent = sorted.length + waiting.length
    ? `(${working} in progress, ${count("done")} done, ${count("failed")} failed)` : "";
}

async function refresh() {
  try {
    render(await invoke("snapshot"));
  } catch (err) {
    toast(message(err));
  }
}

// ---------------------------------------------------------------- events

listen("engine", ({ payload: event }) => {
  switch (event.type) {
    case "item":
      items.set(event.item.id, event.item);
      renderItems();
      break;
    case "removed":
      items.delete(event.id);
      renderItems();
      break;
    case "signed_out":
      signedIn = false;
      for (const id of ["account", "confirm"]) if ($(id).open) $(id).close();
      showError("signin-error", "Your session ended. Please sign in again; your queue is kept.");
      refresh();
      break;
    case "settings":
      settings = event.settings;
      renderStatus();
      break;
    case "connection":
      online = event.online;
      renderStatus();
      break;
    case "waiting":
      waiting = event.files;
      renderItems();
      break;
    case "ask_existing":
      $("ask-existing-text").textContent =
        `The watched folder already holds ${event.count} video${event.count === 1 ? "" : "s"}. Convert them too?`;
      $("ask-existing").hidden = false;
      break;
    case "notice":
      toast(`${event.notice.title}: ${event.notice.body.split("\n").join(", ")}`);
      break;
  }
});

// Native drag and drop (Tauri handles the files; the window only shows it).
listen("tauri://drag-enter", () => $("drop").classList.add("over"));
listen("tauri://drag-leave", () => $("drop").classList.remove("over"));
listen("tauri://drag-drop", ({ payload }) => {
  $("drop").classList.remove("over");
  const count = payload?.paths?.length ?? 0;
  if (count) toast(`Queued ${count} dropped item${count === 1 ? "" : "s"}`);
});

// --------------------------------------------------------------- actions

// "Create an account…" turns the form into a registration form, with the
// password asked twice; "Back to sign in" turns it back.
let registering = false;
function setRegistering(on) {
  registering = on;
  $("confirm-row").hidden = !on;
  $("password2").required = on;
  $("register-back").hidden = !on;
  $("register-button").hidden = on || $("register-button").dataset.open !== "yes";
  $("signin-button").textContent = on ? "Create the account" : "Sign in";
  $("password").autocomplete = on ? "new-password" : "current-password";
  showError("signin-error", null);
  (on ? $("email") : $("password")).focus();
}

async function signIn() {
  showError("signin-error", null);
  if (registering && $("password").value !== $("password2").value) {
    showError("signin-error", "The two passwords are not the same.");
    $("password2").focus();
    return;
  }
  const args = { server: $("server").value, email: $("email").value, password: $("password").value };
  $("signin-button").disabled = true;
  try {
    await invoke(registering ? "register" : "sign_in", args);
    $("password").value = "";
    $("password2").value = "";
    if (registering) setRegistering(false);
    await refresh();
  } catch (err) {
    showError("signin-error", err);
  } finally {
    $("signin-button").disabled = false;
  }
}

$("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn(); });
$("register-button").addEventListener("click", () => setRegistering(true));
$("register-back").addEventListener("click", () => setRegistering(false));
$("signout-button").addEventListener("click", async () => { await invoke("sign_out"); refresh(); });

async function save(next) {
  await invoke("save_settings", { settings: next });
  settings = next;
  renderStatus();
}

$("pause-button").addEventListener("click", async () => {
  try {
    await invoke("set_paused", { paused: !settings.paused });
    await refresh();
  } catch (err) { toast(message(err)); }
});

for (const [input, pick] of [["watch-dir", "watch-pick"], ["out-dir", "out-pick"]]) {
  $(pick).addEventListener("click", async () => {
    const start = $(input).value.trim() || null;
    const folder = await invoke("pick_folder", { start }).catch((err) => { toast(message(err)); return null; });
    if (folder) {
      $(input).value = folder;
      folderEdited();
    }
  });
  $(input).addEventListener("input", folderEdited);
}

// An edit makes the last "Saved" untrue: say nothing until saved again.
function folderEdited() {
  $("folders-message").textContent = "";
  $("folders-create").hidden = true;
}

// The button or Enter in either field saves; a folder that does not exist
// is offered to be created, not saved as if it were watched.
async function saveFolders() {
  const next = { ...settings, watch_dir: $("watch-dir").value.trim() || null, out_dir: $("out-dir").value.trim() || null };
  $("folders-create").hidden = true;
  try {
    await save(next);
    $("folders-message").textContent = next.watch_dir
      ? "Saved. Watching for new videos." : "Saved. Choose a watched folder to start.";
  } catch (err) {
    $("folders-message").textContent = message(err);
    if (err?.code === "missing_folder") {
      const missing = message(err).replace(/^The folder (.*) does not exist\.$/, "$1");
      $("folders-create").dataset.path = missing;
      $("folders-create").hidden = false;
      $("folders-create").focus();
    }
  }
}

$("folders-form").addEventListener("submit", (e) => { e.preventDefault(); saveFolders(); });
$("folders-create").addEventListener("click", async () => {
  try {
    await invoke("create_folder", { path: $("folders-create").dataset.path });
    await saveFolders();
  } catch (err) {
    $("folders-message").textContent = message(err);
  }
});

for (const [id, all] of [["existing-all", true], ["existing-new", false]]) {
  $(id).addEventListener("click", async () => {
    await invoke("choose_existing", { convertAll: all }).catch((err) => toast(message(err)));
    $("ask-existing").hidden = true;
    refresh();
  });
}

// "Add files…", or Enter or Space on the drop area: the file picker.
async function addFiles() {
  try {
    const count = await invoke("add_files");
    if (count) toast(`Added ${count} file${count === 1 ? "" : "s"}`);
  } catch (err) { toast(message(err)); }
}
$("add-files").addEventListener("click", (e) => { e.stopPropagation(); addFiles(); });
$("drop").addEventListener("keydown", (e) => {
  if (e.target !== $("drop") || !["Enter", " "].includes(e.key)) return;
  e.preventDefault();
  addFiles();
});

// "No application to play MP3 files": the path, to copy.
function offerPath(err) {
  $("copy-path-text").textContent = message(err);
  $("copy-path-value").value = (err.detail ?? "").split("\n")[0];
  $("copy-path").showModal();
  $("copy-path-value").select();
}
$("copy-path-copy").addEventListener("click", () => {
  $("copy-path-value").select();
  const copied = document.execCommand("copy");
  toast(copied ? "Path copied" : "Select the path and press Ctrl+C");
});
$("copy-path-close").addEventListener("click", () => $("copy-path").close());

$("jobs").addEventListener("click", async (e) => {
  const target = e.target.closest("button[data-action]");
  if (!target) return;
  const id = Number(target.dataset.id);
  const item = items.get(id);
  const action = target.dataset.action;
  if (action === "remove" && item && !["done", "failed", "duplicate"].includes(item.stage)
      && !await ask(`Stop converting ${displayName(item)} and remove it from the list? The video stays where it is.`,
        "Stop and remove")) return;
  const command = { retry: "retry", remove: "remove", open: "open_mp3", reveal: "show_in_folder", again: "convert_again" }[action];
  try {
    await invoke(command, { id });
    if (command === "remove") { items.delete(id); renderItems(); }
  } catch (err) {
    if (err?.code === "no_app") offerPath(err);
    else toast(message(err));
  }
});

// ---------------------------------------------------------------- dialogs

function showBitrate() {
  $("bitrate-row").hidden = $("quality").value !== "cbr";
}
$("quality").addEventListener("change", showBitrate);
$("after-done").addEventListener("change", () => {
  $("after-done-hint").hidden = $("after-done").value !== "delete";
});

$("settings-button").addEventListener("click", () => {
  const c = settings.conversion;
  $("quality").value = c.quality;
  $("bitrate").value = String(c.bitrate_kbps);
  $("sample-rate").value = c.sample_rate;
  $("channels").value = c.channels;
  $("recursive").checked = settings.recursive;
  $("settle").value = settings.settle_ms / 1000;
  $("after-done").value = settings.after_done.action === "delete" ? "delete" : "keep";
  $("after-done-hint").hidden = $("after-done").value !== "delete";
  $("notifications").checked = settings.notifications;
  $("audio-only").checked = settings.upload_audio_only;
  $("start-at-login").checked = settings.start_at_login;
  showBitrate();
  showError("settings-error", null);
  $("settings").showModal();
});

$("settings-cancel").addEventListener("click", () => $("settings").close());
// The Save button or Enter anywhere in the form saves; Escape or Cancel
// leaves everything as it was.
$("settings-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const settle = $("settle").value.trim() === "" ? NaN : Number($("settle").value);
  if (!(settle >= 1 && settle <= 600)) {
    showError("settings-error", "Enter how many seconds to wait, from 1 to 600.");
    $("settle").focus();
    return;
  }
  const next = {
    ...settings,
    conversion: {
      quality: $("quality").value,
      bitrate_kbps: Number($("bitrate").value),
      sample_rate: $("sample-rate").value,
      channels: $("channels").value,
    },
    recursive: $("recursive").checked,
    settle_ms: Math.round(settle * 1000),
    after_done: $("after-done").value === "delete" ? { action: "delete" } : { action: "keep" },
    notifications: $("notifications").checked,
    upload_audio_only: $("audio-only").checked,
    start_at_login: $("start-at-login").checked,
  };
  try {
    await save(next);
    $("settings").close();
    toast("Settings saved");
  } catch (err) {
    showError("settings-error", err);
  }
});

$("about-button").addEventListener("click", async () => {
  const about = await invoke("about");
  const rows = [["Signed in as", about.account ?? "nobody"], ["Server", about.server], ["App", about.app],
    ["Tauri", about.tauri], ["WebKitGTK", about.webview]];
  $("about-list").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  $("about").showModal();
});
$("about-close").addEventListener("click", () => $("about").close());

// ------------------------------------------------------------------ zoom

// Ctrl with +, - and 0 (or the wheel) zooms the whole window, every size
// being in rem; the zoom is remembered.
const ZOOM_STEPS = [67, 80, 90, 100, 110, 125, 150, 175, 200];
let zoom = Number(localStorage.getItem("zoom")) || 100;
function applyZoom(next) {
  zoom = Math.min(200, Math.max(67, next));
  document.documentElement.style.fontSize = zoom === 100 ? "" : `${zoom}%`;
  localStorage.setItem("zoom", String(zoom));
}
function stepZoom(direction) {
  const steps = direction > 0 ? ZOOM_STEPS : [...ZOOM_STEPS].reverse();
  applyZoom(steps.find((step) => (direction > 0 ? step > zoom : step < zoom)) ?? zoom);
}
document.addEventListener("keydown", (e) => {
  if (!e.ctrlKey || e.altKey) return;
  if (["+", "="].includes(e.key)) stepZoom(1);
  else if (e.key === "-") stepZoom(-1);
  else if (e.key === "0") applyZoom(100);
  else return;
  e.preventDefault();
});
document.addEventListener("wheel", (e) => {
  if (!e.ctrlKey) return;
  e.preventDefault();
  stepZoom(e.deltaY < 0 ? 1 : -1);
}, { passive: false });
applyZoom(zoom);

refresh();
