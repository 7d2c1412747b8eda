// The window: draws the core's snapshot, applies its live events and calls
// its commands. Errors from commands arrive as {code, message}.
"use strict";

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const $ = (id) => document.getElementById(id);
const items = new Map();
let settings = null;
let signedIn = false;
let online = true;
// The account as the server last described it (GET /api/v1/me).
let profile = null;

const STAGES = {
  pending: "Waiting to upload",
  extracting: "Extracting audio",
  uploading: "Uploading",
  queued: "Queued on the server",
  converting: "Converting",
  downloading: "Downloading the MP3",
  done: "Done",
  failed: "Failed",
};

function message(err) {
  if (err && typeof err === "object" && "message" in err) return err.message;
  return String(err);
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
  el.textContent = err ? message(err) : "";
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
  if (server === registrationCheckedFor) return;
  registrationCheckedFor = server;
  let open = false;
  try {
    open = await invoke("registration_open", { server });
  } catch (_) {
    // Unreachable or not a server of ours: no link.
  }
  if ($("server").value.trim() === server) $("register-button").hidden = !open;
}

let serverTyping;
$("server").addEventListener("input", () => {
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
  const mb = bytes / 1e6;
  return `${mb < 10 ? mb.toFixed(1) : Math.round(mb)} MB`;
}

// "uploading 9.8 MB instead of 358 MB" when only the audio travels.
function sentText(item) {
  if (item.upload_bytes == null || item.upload_bytes >= item.size) return "";
  return ` ${megabytes(item.upload_bytes)} instead of ${megabytes(item.size)}`;
}

function stageText(item) {
  const label = STAGES[item.stage] ?? item.stage;
  if (item.stage === "failed") return `${label}: ${item.error ?? "unknown reason"}`;
  if (item.stage === "uploading") {
    return `${label}${sentText(item)} ${Math.round(item.progress * 100)}%`;
  }
  if (WITH_PROGRESS.includes(item.stage)) {
    return `${label} ${Math.round(item.progress * 100)}%`;
  }
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

function renderItems() {
  const list = $("jobs");
  const sorted = [...items.values()].sort((a, b) => b.id - a.id);
  list.replaceChildren(...sorted.map((item) => {
    const li = document.createElement("li");
    li.className = `job ${item.stage}`;
    li.dataset.id = item.id;
    li.dataset.stage = item.stage;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = item.name;
    const stage = document.createElement("div");
    stage.className = `stage ${item.stage}`;
    stage.textContent = stageText(item);
    const info = document.createElement("div");
    info.className = "info";
    info.append(name, stage);
    if (WITH_PROGRESS.includes(item.stage)) {
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = item.progress;
      bar.setAttribute("aria-label", `${item.name}: ${stageText(item)}`);
      info.append(bar);
    }
    li.append(info);
    const actions = document.createElement("div");
    actions.className = "actions";
    if (item.stage === "failed") actions.append(button("Retry", "retry", item.id));
    if (item.stage === "done") {
      actions.append(button("Open MP3", "open", item.id), button("Show in folder", "reveal", item.id));
    }
    actions.append(button("Remove", "remove", item.id));
    li.append(actions);
    return li;
  }));
  $("empty").hidden = items.size > 0;
  const count = (stage) => sorted.filter((i) => i.stage === stage).length;
  const working = sorted.length - count("done") - count("failed");
  $("counts").textContent = sorted.length
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
    case "ask_existing":
      $("ask-existing-text").textContent =
        `The watched folder already holds ${event.count} video${event.count === 1 ? "" : "s"}. Convert them too?`;
      $("ask-existing").hidden = false;
      break;
    case "notice":
      toast(`${event.notice.title}: ${event.notice.body.split("\n")[0]}`);
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

async function signIn(register) {
  showError("signin-error", null);
  const args = { server: $("server").value, email: $("email").value, password: $("password").value };
  $("signin-button").disabled = true;
  try {
    await invoke(register ? "register" : "sign_in", args);
    $("password").value = "";
    await refresh();
  } catch (err) {
    showError("signin-error", err);
  } finally {
    $("signin-button").disabled = false;
  }
}

$("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn(false); });
$("register-button").addEventListener("click", () => signIn(true));
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
    const folder = await invoke("pick_folder").catch((err) => { toast(message(err)); return null; });
    if (folder) $(input).value = folder;
  });
}

$("folders-save").addEventListener("click", async () => {
  const next = { ...settings, watch_dir: $("watch-dir").value.trim() || null, out_dir: $("out-dir").value.trim() || null };
  try {
    await save(next);
    $("folders-message").textContent = "Saved. Watching for new videos.";
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

$("jobs").addEventListener("click", async (e) => {
  const target = e.target.closest("button[data-action]");
  if (!target) return;
  const id = Number(target.dataset.id);
  const command = { retry: "retry", remove: "remove", open: "open_mp3", reveal: "show_in_folder" }[target.dataset.action];
  try {
    await invoke(command, { id });
    if (command === "remove") { items.delete(id); renderItems(); }
  } catch (err) { toast(message(err)); }
});

// ---------------------------------------------------------------- dialogs

$("settings-button").addEventListener("click", () => {
  const c = settings.conversion;
  $("quality").value = c.quality;
  $("bitrate").value = String(c.bitrate_kbps);
  $("sample-rate").value = c.sample_rate;
  $("channels").value = c.channels;
  $("recursive").checked = settings.recursive;
  $("settle").value = settings.settle_ms / 1000;
  $("after-done").value = settings.after_done.action === "delete" ? "delete" : "keep";
  $("notifications").checked = settings.notifications;
  $("audio-only").checked = settings.upload_audio_only;
  $("start-at-login").checked = settings.start_at_login;
  showError("settings-error", null);
  $("settings").showModal();
});

$("settings-cancel").addEventListener("click", () => $("settings").close());
$("settings-save").addEventListener("click", async () => {
  const next = {
    ...settings,
    conversion: {
      quality: $("quality").value,
      bitrate_kbps: Number($("bitrate").value),
      sample_rate: $("sample-rate").value,
      channels: $("channels").value,
    },
    recursive: $("recursive").checked,
    settle_ms: Math.round(Number($("settle").value) * 1000),
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
  const rows = [["App", about.app], ["Tauri", about.tauri], ["WebKitGTK", about.webview], ["Server", about.server]];
  $("about-list").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  $("about").showModal();
});
$("about-close").addEventListener("click", () => $("about").close());

refresh();
