// The sounds of English as a learner reads them: each ARPAbet phone apa scores (CMUdict's
// symbols, stress digit removed) with its IPA symbol, the letters that usually spell it
// and a common word that has it ("th as in think"), and what each score means.
"use strict";

const SOUNDS = {
  AA: ["ɑ", "o", "hot"], AE: ["æ", "a", "cat"], AH: ["ʌ", "u", "cup"], AO: ["ɔ", "aw", "saw"],
  AW: ["aʊ", "ow", "now"], AY: ["aɪ", "i", "time"], B: ["b", "b", "bed"], CH: ["tʃ", "ch", "chair"],
  D: ["d", "d", "day"], DH: ["ð", "th", "this"], EH: ["ɛ", "e", "bed"], ER: ["ɝ", "er", "bird"],
  EY: ["eɪ", "a", "day"], F: ["f", "f", "fish"], G: ["ɡ", "g", "go"], HH: ["h", "h", "hat"],
  IH: ["ɪ", "i", "sit"], IY: ["i", "ee", "see"], JH: ["dʒ", "j", "jump"], K: ["k", "k", "cat"],
  L: ["l", "l", "leg"], M: ["m", "m", "man"], N: ["n", "n", "no"], NG: ["ŋ", "ng", "sing"],
  OW: ["oʊ", "o", "go"], OY: ["ɔɪ", "oy", "boy"], P: ["p", "p", "pen"], R: ["ɹ", "r", "red"],
  S: ["s", "s", "sun"], SH: ["ʃ", "sh", "she"], T: ["t", "t", "top"], TH: ["θ", "th", "think"],
  UH: ["ʊ", "oo", "book"], UW: ["u", "oo", "food"], V: ["v", "v", "voice"], W: ["w", "w", "wet"],
  Y: ["j", "y", "yes"], Z: ["z", "z", "zoo"], ZH: ["ʒ", "s", "vision"],
};
// Unstressed vowels sound different: "a" in "about", "er" in "butter".
const UNSTRESSED = {AH0: ["ə", "a", "about"], ER0: ["ɚ", "er", "butter"]};

function sound(phone) {
  const entry = UNSTRESSED[phone] || SOUNDS[phone.replace(/[012]$/, "")];
  if (!entry) return {ipa: phone, spoken: phone};
  const [ipa, letters, word] = entry;
  return {ipa, spoken: letters + " as in \u201c" + word + "\u201d"};
}

const ASPECT_MEANING = {
  accuracy: "how correctly the sounds were said",
  fluency: "how smoothly it flowed, without long pauses or repeats",
  prosody: "rhythm, stress and intonation, like natural speech",
  completeness: "how many of the words were said",
  total: "the overall impression",
  stress: "whether the right syllable was stressed (5 or 10)",
};
