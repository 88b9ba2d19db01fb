// The learner's page: pick or type a sentence and hear it said (GET /speak, eSpeak NG), record
// it (MediaRecorder) or upload a file, POST /score, and see what to practise first (each weak
// word said well beside the learner's own recording of it), the sentence scores with their
// scale and meaning, and every word and sound with its score. Sounds are shown in IPA and as
// "th as in think" (sounds.js), levels by text and symbol as well as colour. No framework,
// nothing fetched from elsewhere, no inline script (the page's Content-Security-Policy).
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SECONDS = 30;           // the model hears at most 30 s (Qwen2-Audio)
const GOOD = 8, FAIR = 6;         // levels: 8-10 good, 6-7 fair, 0-5 practise
const WORD_PAD_S = 0.08;          // a word cut from the recording keeps a little either side
let recorded = null;              // {blob, name} of the recording or the uploaded file
let recordedAudio = null;         // its decoded AudioBuffer, once a word of it is played
let recorder = null, stopTimer = null, tick = null;
const spoken = new Map();         // text -> object URL of its model pronunciation

function say(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

function ready() {
  $("score").disabled = !(recorded && $("text").value.trim());
  $("hear-sentence").disabled = !$("text").value.trim();
}

function clearResult() {
  $("result").hidden = true;
  for (const id of ["practice", "bars", "words"]) $(id).replaceChildren();
  delete document.body.dataset.scored;
}

function authHeaders() {
  return $("apikey").value ? {"Authorization": "Bearer " + $("apikey").value} : {};
}

// ---- the model pronunciation ---------------------------------------------------------

async function hear(text, button) {
  try {
    if (!spoken.has(text)) {
      const response = await fetch("/speak?text=" + encodeURIComponent(text), {headers: authHeaders()});
      if (!response.ok) {
        const body = await response.json().catch(() => ({error: response.statusText}));
        return say("The model pronunciation is not available: " + body.error, true);
      }
      spoken.set(text, URL.createObjectURL(await response.blob()));
    }
    await new Audio(spoken.get(text)).play();
    if (button) button.dataset.played = "yes";
  } catch (e) {
    say("The model pronunciation could not be played (" + e.message + ").", true);
  }
}

// ---- the learner's own recording of one word ---------------------------------------------

async function hearYourself(word, button) {
  try {
    const context = new AudioContext();
    if (!recordedAudio) recordedAudio = await context.decodeAudioData(await recorded.blob.arrayBuffer());
    const start = Math.max(0, word.start - WORD_PAD_S);
    const end = Math.min(recordedAudio.duration, word.end + WORD_PAD_S);
    const source = context.createBufferSource();
    source.buffer = recordedAudio;
    source.connect(context.destination);
    source.onended = () => context.close();
    source.start(0, start, Math.max(0.05, end - start));
    button.dataset.played = "yes";
  } catch (e) {
    say("Your recording of this word could not be played (" + e.message + ").", true);
  }
}

function hasTiming(word) {
  return word && typeof word.start === "number" && typeof word.end === "number" && word.end > word.start;
}

// ---- recording and uploading -----------------------------------------------------------

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

function useRecording(blob, name) {
  recorded = {blob, name};
  recordedAudio = null;
  $("playback").src = URL.createObjectURL(blob);
  $("playback").hidden = false;
  ready();
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
    useRecording(blob, "recording." + extensionOf(blob.type));
    $("record").textContent = "Record again";
    $("record").classList.remove("recording");
    clearInterval(tick);
    say("Recorded. Press \u201cScore my reading\u201d.");
    document.body.dataset.recorded = String(blob.size);
  };
  clearResult();  // a new attempt: the old result no longer applies
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
  clearResult();
  useRecording(file, file.name);
  say("File chosen: " + file.name);
};

$("examples").onchange = () => {
  if ($("examples").value) $("text").value = $("examples").value;
  clearResult();
  ready();
};
$("text").oninput = () => { clearResult(); ready(); };
$("hear-sentence").onclick = () => hear($("text").value.trim(), $("hear-sentence"));
$("apikey").value = localStorage.getItem("apa-api-key") || "";
$("apikey").onchange = () => localStorage.setItem("apa-api-key", $("apikey").value);

// ---- the result ---------------------------------------------------------------------

function accuracy(entry) {
  if (!entry) return null;
  return entry.expected !== null && entry.expected !== undefined ? entry.expected : entry.score;
}

function level(value) {
  return value === null ? "" : value >= GOOD ? "good" : value >= FAIR ? "fair" : "weak";
}

const LEVEL_TEXT = {good: "\u2713 good", fair: "~ fair", weak: "\u2717 practise", "": "not scored"};

function outOfTen(value) {
  return value === null ? "\u2013/10" : Math.round(value) + "/10";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function levelTag(value) {
  return element("span", "level " + level(value), LEVEL_TEXT[level(value)]);
}

function button(label, onclick, className) {
  const node = element("button", className || "", label);
  node.type = "button";
  node.onclick = () => onclick(node);
  return node;
}

function showPractice(result) {
  const list = $("practice");
  const weakSounds = new Map();  // word index -> its phones below the threshold, weakest first
  result.practice.phones.forEach((p) => {
    if (!weakSounds.has(p.word_index)) weakSounds.set(p.word_index, []);
    weakSounds.get(p.word_index).push(p);
  });
  result.practice.words.forEach((entry) => {
    const word = result.words[entry.index] || {};
    const value = accuracy(entry);
    const item = element("li", "practice-item " + level(value));
    item.dataset.word = entry.word;
    const head = element("p", "practice-word");
    head.append(element("strong", "", entry.word.toLowerCase()), " ", element("span", "score", outOfTen(value)),
                " ", levelTag(value));
    item.appendChild(head);
    const sounds = weakSounds.get(entry.index) || [];
    if (sounds.length) {
      const line = element("p", "practice-sounds", "Sounds to work on: ");
      sounds.forEach((p, k) => {
        const s = sound(p.phone);
        line.append((k ? ", " : ""), element("span", "ipa", "/" + s.ipa + "/"), " " + s.spoken + " (" +
                    outOfTen(accuracy(p)) + ")");
      });
      item.appendChild(line);
    }
    const actions = element("p", "actions");
    actions.appendChild(button("\u25B6 Hear it said well", (b) => hear(entry.word.toLowerCase(), b), "model-voice"));
    if (hasTiming(word) && recorded) {
      actions.appendChild(button("\u25B6 Hear yourself", (b) => hearYourself(word, b), "own-voice"));
    } else {
      actions.appendChild(element("span", "note", "(your own recording of this word needs its timing, " +
                                                  "which this result does not have)"));
    }
    item.appendChild(actions);
    list.appendChild(item);
  });
  $("practice-none").hidden = result.practice.words.length > 0;
}

function showSentence(result) {
  const bars = $("bars");
  Object.entries(result.sentence).forEach(([aspect, entry]) => {
    const value = accuracy(entry);
    const row = element("li", "bar " + level(value));
    row.dataset.aspect = aspect;
    const name = element("span", "name", aspect);
    const meter = element("meter", "track");
    meter.min = 0; meter.max = 10; meter.low = FAIR; meter.high = GOOD; meter.optimum = 10;
    meter.value = value === null ? 0 : value;
    meter.setAttribute("aria-label", aspect + " " + outOfTen(value));
    row.append(name, meter, element("span", "value", outOfTen(value)), levelTag(value),
               element("span", "meaning", ASPECT_MEANING[aspect] || ""));
    bars.appendChild(row);
  });
}

function showWords(result) {
  const threshold = result.practice.threshold;
  const words = $("words");
  result.words.forEach((word) => {
    const value = accuracy(word.scores.accuracy);
    const box = element("li", "word " + level(value));
    box.dataset.word = word.word;
    if (value !== null) box.dataset.accuracy = value.toFixed(1);
    const label = element("span", "text", word.word.toLowerCase());
    if (word.guessed) label.appendChild(element("span", "guess-mark", "*"));
    box.append(label, element("span", "score", outOfTen(value)), levelTag(value));
    const phones = element("span", "phones");
    const scored = word.phone_scores.length ? word.phone_scores : word.phones.map((p) => ({phone: p}));
    scored.forEach((p) => {
      const v = accuracy(p);
      const s = sound(p.phone);
      const weak = v !== null && v < threshold;
      const node = element("span", "phone" + (weak ? " weak" : ""));
      node.append(element("span", "ipa", s.ipa), element("span", "phone-score", (weak ? "\u2717 " : "") +
                  (v === null ? "" : Math.round(v))));
      node.setAttribute("aria-label", s.spoken + (v === null ? "" : ", " + outOfTen(v)) + (weak ? ", practise" : ""));
      phones.appendChild(node);
    });
    box.appendChild(phones);
    words.appendChild(box);
  });
}

function show(result) {
  clearResult();
  showPractice(result);
  showSentence(result);
  showWords(result);
  $("result").hidden = false;
  document.body.dataset.scored = "yes";
  // on a phone the result is below the fold: bring it up and put the focus there
  $("result").scrollIntoView({block: "start"});
  $("result-title").focus({preventScroll: true});
}

$("score").onclick = async () => {
  const form = new FormData();
  form.append("audio", recorded.blob, recorded.name);
  form.append("text", $("text").value);
  $("score").disabled = true;
  clearResult();
  say("Scoring\u2026");
  try {
    const response = await fetch("/score", {method: "POST", body: form, headers: authHeaders()});
    const body = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      say(body.error + (retry ? " (try again in " + retry + " s)" : ""), true);
      return;
    }
    show(body);
    say("Scored: \u201c" + body.text.toLowerCase() + "\u201d" +
        (body.problems.length ? ". Note: " + body.problems.join("; ") : ""));
  } catch (e) {
    say("The server could not be reached (" + e.message + ").", true);
  } finally {
    ready();
  }
};
