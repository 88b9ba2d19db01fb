// The learner's page: type or pick a sentence, record it (MediaRecorder) or upload a file,
// POST /score, and show each word coloured by its accuracy, its phones (weak ones marked)
// and the sentence scores as bars. No framework and nothing fetched from elsewhere: the page
// must work offline.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SECONDS = 30;           // the model hears at most 30 s
const GOOD = 8, FAIR = 6;         // word colours; phones under the server's practice threshold are marked
let recorded = null;              // {blob, name} of the recording or the uploaded file
let recorder = null, stopTimer = null, tick = null;

function say(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

function ready() {
  $("score").disabled = !(recorded && $("text").value.trim());
}

// Browsers record different containers: Chrome and Firefox WebM/Opus, Safari MP4/AAC.
function recordingType() {
  for (const type of ["audio/webm;codecs=opus", "audio/webm", "audio/mp4", "audio/ogg;codecs=opus"]) {
    if (window.MediaRecorder && MediaRecorder.isTypeSupported(type)) return type;
  }
  return "";
}

function extensionOf(type) {
  return type.includes("mp4") ? "m4a" : type.includes("ogg") ? "ogg" : "webm";
}

async function startRecording() {
  // Raw audio: the model was trained on unprocessed speech, and the browser's echo
  // cancellation, noise suppression and gain control reshape it.
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  const type = recordingType();
  recorder = new MediaRecorder(stream, type ? {mimeType: type} : {});
  const chunks = [];
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    const blob = new Blob(chunks, {type: recorder.mimeType || type || "audio/webm"});
    recorded = {blob, name: "recording." + extensionOf(blob.type)};
    $("playback").src = URL.createObjectURL(blob);
    $("playback").hidden = false;
    $("record").textContent = "Record again";
    $("record").classList.remove("recording");
    clearInterval(tick);
    say("Recorded. Press \u201cScore my reading\u201d.");
    document.body.dataset.recorded = String(blob.size);
    ready();
  };
  recorder.start();
  const started = Date.now();
  $("record").textContent = "Stop";
  $("record").classList.add("recording");
  tick = setInterval(() => { $("timer").textContent = ((Date.now() - started) / 1000).toFixed(0) + " s"; }, 250);
  stopTimer = setTimeout(stopRecording, MAX_SECONDS * 1000);
  say("Recording\u2026 read the sentence, then press Stop.");
}

function stopRecording() {
  clearTimeout(stopTimer);
  if (recorder && recorder.state === "recording") recorder.stop();
}

$("record").onclick = async () => {
  if (recorder && recorder.state === "recording") return stopRecording();
  try {
    await startRecording();
  } catch (e) {
    say("The microphone cannot be used (" + e.name + "). Allow it in the browser, or upload a file.", true);
  }
};

$("file").onchange = () => {
  const file = $("file").files[0];
  if (!file) return;
  recorded = {blob: file, name: file.name};
  $("playback").src = URL.createObjectURL(file);
  $("playback").hidden = false;
  say("File chosen: " + file.name);
  ready();
};

$("examples").onchange = () => {
  if ($("examples").value) $("text").value = $("examples").value;
  ready();
};
$("text").oninput = ready;
$("apikey").value = localStorage.getItem("apa-api-key") || "";
$("apikey").onchange = () => localStorage.setItem("apa-api-key", $("apikey").value);

function accuracy(entry) {
  if (!entry) return null;
  return entry.expected !== null && entry.expected !== undefined ? entry.expected : entry.score;
}

function level(value) {
  return value === null ? "" : value >= GOOD ? "good" : value >= FAIR ? "fair" : "weak";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(result) {
  const threshold = result.practice.threshold;
  const words = $("words");
  words.replaceChildren();
  result.words.forEach((word) => {
    const value = accuracy(word.scores.accuracy);
    const box = element("span", "word " + level(value));
    box.dataset.word = word.word;
    if (value !== null) box.dataset.accuracy = value.toFixed(1);
    const label = element("span", "text", word.word.toLowerCase());
    if (word.guessed) {
      label.appendChild(element("span", "guess-mark", "*"));
      label.title = "pronunciation guessed: this word is in no dictionary";
    }
    if (value !== null) label.title = (label.title ? label.title + "; " : "") + "accuracy " + value.toFixed(1) + "/10";
    box.appendChild(label);
    const phones = element("span", "phones");
    const scored = word.phone_scores.length ? word.phone_scores : word.phones.map((p) => ({phone: p}));
    scored.forEach((p) => {
      const v = accuracy(p);
      const node = element("span", "phone" + (v !== null && v < threshold ? " weak" : ""), p.phone.replace(/[012]$/, ""));
      if (v !== null) node.title = p.phone + ": " + v.toFixed(1) + "/10";
      phones.appendChild(node);
    });
    box.appendChild(phones);
    words.appendChild(box);
  });
  const bars = $("bars");
  bars.replaceChildren();
  Object.entries(result.sentence).forEach(([aspect, entry]) => {
    const value = accuracy(entry);
    const row = element("div", "bar");
    row.dataset.aspect = aspect;
    row.appendChild(element("span", "name", aspect));
    const track = element("span", "track");
    const fill = element("span", "fill");
    fill.style.width = (value === null ? 0 : value * 10) + "%";
    fill.style.display = "block";
    track.appendChild(fill);
    row.appendChild(track);
    row.appendChild(element("span", "value", value === null ? "-" : value.toFixed(1)));
    bars.appendChild(row);
  });
  $("result").hidden = false;
  document.body.dataset.scored = "yes";
}

$("score").onclick = async () => {
  const form = new FormData();
  form.append("audio", recorded.blob, recorded.name);
  form.append("text", $("text").value);
  const headers = {};
  if ($("apikey").value) headers["Authorization"] = "Bearer " + $("apikey").value;
  $("score").disabled = true;
  say("Scoring\u2026");
  try {
    const response = await fetch("/score", {method: "POST", body: form, headers});
    const body = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      say(body.error + (retry ? " (try again in " + retry + " s)" : ""), true);
      return;
    }
    show(body);
    say("Scored: \u201c" + body.text.toLowerCase() + "\u201d");
  } catch (e) {
    say("The server could not be reached (" + e.message + ").", true);
  } finally {
    ready();
  }
};
