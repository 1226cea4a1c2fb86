// The job page: a read-only view of the caller's own jobs through the API (GET only).
// The API token stays in this tab's sessionStorage; the page never holds a Ray key, and of
// MLflow only the caller's own login (GET /v1/me/mlflow), shown for MLflow's login dialog.
"use strict";

const KEY = "bckd-api-token";
const REFRESH_MS = 5000;
let timer = null;

function $(id) { return document.getElementById(id); }

async function api(path) {
  const r = await fetch(path, {headers: {Authorization: "Bearer " + sessionStorage.getItem(KEY)}});
  if (r.status === 401) { logout("the token was refused"); throw new Error("401"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function cell(row, text) { const td = row.insertCell(); td.textContent = text ?? ""; return td; }

function fact(dl, term, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt"); dt.textContent = term;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  dl.append(dt, dd);
}

function mib(bytes) { return bytes == null ? "" : (bytes / 2 ** 20).toFixed(0); }

function resources(r) {
  return Object.entries(r).map(([k, v]) => k + " " + v).join(", ");
}

async function showJobs() {
  const jobs = await api("/v1/jobs?limit=100");
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  for (const j of jobs.data) {
    const row = body.insertRow();
    row.dataset.jobId = j.id;
    const a = document.createElement("a");
    a.href = "#job=" + encodeURIComponent(j.id); a.textContent = j.id;
    cell(row, "").append(a);
    for (const v of [j.name, j.kind, j.experiment, j.status, j.created_at]) cell(row, v);
  }
}

async function showJob(id) {
  const v = await api("/v1/jobs/" + encodeURIComponent(id) + "/view");
  const j = v.job;
  $("job").hidden = false;
  $("job").dataset.jobId = j.id;
  $("job-title").textContent = j.name + " (" + j.id + ")";
  const dl = $("job-facts"); dl.replaceChildren();
  fact(dl, "status", j.status + (j.stalled_at ? " (stalled since " + j.stalled_at + ")" : "") +
       (j.queue_position ? " #" + j.queue_position + ", waits for: " + j.queue_reason : ""));
  fact(dl, "message", j.message);
  fact(dl, "progress", v.progress);
  fact(dl, "Ray driver", v.driver && (v.driver.status + (v.driver.message ? ": " +
       v.driver.message : "") + (v.driver.node_ip ? " on " + v.driver.node_ip : "")));
  fact(dl, "requested", v.requested.num_workers + " worker(s) x " +
       v.requested.cpus_per_worker + " CPU, " + v.requested.gpus_per_worker + " GPU");
  fact(dl, "metrics", j.metrics && Object.entries(j.metrics)
       .map(([k, m]) => k + " " + Number(m).toPrecision(4)).join(", "));
  if (j.links && j.links.mlflow_run) {
    const a = document.createElement("a");
    a.href = j.links.mlflow_run; a.id = "mlflow-link"; a.textContent = "MLflow run";
    fact(dl, "tracking", a);
  }
  $("ray-note").textContent = v.ray_note ?? "";
  const body = $("workers").tBodies[0];
  body.replaceChildren();
  for (const w of v.workers) {
    const row = body.insertRow();
    for (const x of [w.class_name, w.state, w.node_ip, w.pid, resources(w.resources),
                     w.cpu_percent, mib(w.rss_bytes), mib(w.gpu_memory_bytes)]) cell(row, x);
  }
  $("log-source").textContent = "(" + v.log_source + ")";
  $("log").textContent = v.log_tail;
}

async function refresh() {
  clearTimeout(timer);
  const m = location.hash.match(/^#job=(.+)$/);
  try {
    await showJobs();
    if (m) await showJob(decodeURIComponent(m[1])); else $("job").hidden = true;
  } catch (err) {
    if (err.message !== "401") {  // another owner's job is a 404: nothing of it is shown
      $("job").hidden = false;
      delete $("job").dataset.jobId;
      for (const id of ["job-title", "job-facts", "log", "log-source"]) $(id).replaceChildren();
      $("workers").tBodies[0].replaceChildren();
      $("ray-note").textContent = String(err);
    }
  }
  if (sessionStorage.getItem(KEY)) timer = setTimeout(refresh, REFRESH_MS);
}

async function start() {
  try {
    const me = await api("/v1/me");
    $("whoami").textContent = me.name;
  } catch (err) { return; }
  try {
    const login = await api("/v1/me/mlflow");
    $("mlflow-user").textContent = login.username ?? "";
    $("mlflow-password").value = login.password ?? "";
    $("mlflow-login").hidden = !login.username;  // an MLflow without logins asks for none
  } catch (err) { $("mlflow-login").hidden = true; }  // MLflow down: the jobs still show
  $("login").hidden = true;
  $("session").hidden = false;
  await refresh();
}

function logout(why) {
  clearTimeout(timer);
  sessionStorage.removeItem(KEY);
  $("mlflow-password").value = "";
  $("mlflow-password").type = "password";
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why ?? "";
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  start();
});
$("logout").addEventListener("click", () => logout());
$("mlflow-show").addEventListener("click", () => {
  const shown = $("mlflow-password").type === "text";
  $("mlflow-password").type = shown ? "password" : "text";
  $("mlflow-show").textContent = shown ? "show" : "hide";
});
window.addEventListener("hashchange", refresh);
if (sessionStorage.getItem(KEY)) start(); else logout();
