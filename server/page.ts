/**
 * GET /: one self-contained page to try the model: type a headline, see the topic and every topic's
 * probability as a bar. No external assets (Spaces and offline machines alike); results are written with
 * textContent only, so a text can never inject markup; the inline script and style run under a per-response
 * nonce in a strict Content-Security-Policy.
 * @module
 */

/** The page's HTML, with `nonce` on its inline style and script. */
export function pageHtml(nonce: string, labels: readonly string[]): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DistriNews: news topic classifier</title>
<style nonce="${nonce}">
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #1d2430; }
  h1 { font-size: 1.5rem; margin-bottom: .25rem; }
  p.lead { color: #566; margin-top: 0; }
  textarea { width: 100%; box-sizing: border-box; font: inherit; padding: .5rem; min-height: 5rem; }
  button { font: inherit; padding: .4rem 1.2rem; margin-top: .5rem; cursor: pointer; }
  #result { margin-top: 1.5rem; }
  #topic { font-size: 1.25rem; font-weight: 600; }
  .row { display: grid; grid-template-columns: 6rem 1fr 4rem; gap: .5rem; align-items: center; margin: .3rem 0; }
  .track { background: #e8ecf1; border-radius: 4px; height: 1rem; overflow: hidden; }
  .bar { background: #3b6fd8; height: 100%; width: 0; transition: width .3s; }
  .row.best .bar { background: #1f9d55; }
  .pct { text-align: right; font-variant-numeric: tabular-nums; }
  #error { color: #b00020; }
</style>
</head>
<body>
<h1>DistriNews</h1>
<p class="lead">Type a news headline (and its summary, if you like): the model says which AG News topic it is.</p>
<form id="form">
  <label for="text">Headline</label>
  <textarea id="text" name="text" required placeholder="e.g. Stocks rally as the central bank holds rates"></textarea>
  <button id="submit" type="submit">Classify</button>
</form>
<div id="result" aria-live="polite" hidden>
  <div>Topic: <span id="topic"></span> <span id="confidence"></span></div>
  <div id="bars"></div>
</div>
<p id="error" role="alert"></p>
<script nonce="${nonce}">
const labels = ${JSON.stringify(labels).replace(/</g, "\\u003c")};
const form = document.getElementById("form"), button = document.getElementById("submit");
const result = document.getElementById("result"), errorBox = document.getElementById("error");
const bars = document.getElementById("bars");
const rows = labels.map((name) => {
  const row = document.createElement("div"), label = document.createElement("span");
  const track = document.createElement("div"), bar = document.createElement("div"), pct = document.createElement("span");
  row.className = "row"; row.dataset.label = name; track.className = "track"; bar.className = "bar"; pct.className = "pct";
  label.textContent = name; track.append(bar); row.append(label, track, pct); bars.append(row);
  return { name, row, bar, pct };
});
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.textContent = "";
  button.disabled = true;
  try {
    const response = await fetch("predict", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: document.getElementById("text").value }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error?.message ?? response.statusText);
    document.getElementById("topic").textContent = body.label;
    document.getElementById("confidence").textContent = "(" + (100 * body.confidence).toFixed(1) + "%)";
    for (const r of rows) {
      const p = body.probabilities[r.name] ?? 0;
      r.bar.style.width = (100 * p).toFixed(1) + "%";
      r.pct.textContent = (100 * p).toFixed(1) + "%";
      r.row.classList.toggle("best", r.name === body.label);
    }
    result.hidden = false;
  } catch (err) {
    result.hidden = true;
    errorBox.textContent = "Could not classify: " + err.message;
  } finally {
    button.disabled = false;
  }
});
</script>
</body>
</html>
`;
}
