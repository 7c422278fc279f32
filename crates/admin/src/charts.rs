//! Bar charts as SVG, rendered on the server into the page (no JavaScript,
//! no image files, nothing for the CSP to allow).
//!
//! Hand-written rather than from a charting crate: the dashboard needs
//! only bars (stacked by series, or horizontal), and plotters' SVG backend
//! writes fixed RGB colours (no `currentColor`, no CSS variables, so no
//! dark mode without rewriting its output) and needs a font backend to
//! lay out axis labels. Here every colour is a CSS class of `/admin.css`,
//! every text goes through maud (escaped), and each chart carries its
//! text alternative: `<title>`/`<desc>`, a `<title>` per bar with its
//! number, and the same numbers as a table under the chart.

use maud::{Markup, html};

/// One series of a chart: a name for the legend and one value per label.
pub struct Series {
    pub name: String,
    /// The CSS class that colours it (`sent`, `failed`, `hard`, …; see
    /// `.chart .series-*` in `admin.css`).
    pub class: &'static str,
    pub values: Vec<u64>,
}

/// A bar chart: one bar per label, its series stacked.
pub struct Bars {
    /// The `id` of the chart's `<figure>` (stable: the browser tests use it).
    pub id: &'static str,
    pub title: &'static str,
    /// What the chart shows, in words (its `<desc>`).
    pub desc: &'static str,
    pub labels: Vec<String>,
    pub series: Vec<Series>,
}

const W: f64 = 640.0;
const H: f64 = 200.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 8.0;
/// At most this many labels under the bars (every n-th label is shown).
const X_LABELS: usize = 8;

fn f(x: f64) -> String {
    format!("{x:.1}")
}

impl Bars {
    /// The sum of every series at label `i`.
    fn total(&self, i: usize) -> u64 {
        self.series
            .iter()
            .map(|s| s.values.get(i).copied().unwrap_or(0))
            .sum()
    }

    /// The non-empty parts of bar `i`, bottom up: each series with the
    /// height below it and its own value.
    fn segments(&self, i: usize) -> Vec<(&Series, u64, u64)> {
        let mut base = 0;
        let mut out = Vec::new();
        for s in &self.series {
            let v = s.values.get(i).copied().unwrap_or(0);
            if v > 0 {
                out.push((s, base, v));
            }
            base += v;
        }
        out
    }

    /// The chart as a `<figure>`: the SVG, a legend and the numbers as a table.
    pub fn render(&self) -> Markup {
        let n = self.labels.len().max(1);
        let max = (0..self.labels.len())
            .map(|i| self.total(i))
            .max()
            .unwrap_or(0)
            .max(1);
        let plot_w = W - LEFT;
        let plot_h = H - BOTTOM - TOP;
        let step = plot_w / n as f64;
        let bar_w = (step * 0.8).max(1.0);
        let y = |v: u64| TOP + plot_h - plot_h * v as f64 / max as f64;
        let every = self.labels.len().div_ceil(X_LABELS).max(1);
        let grand: u64 = (0..self.labels.len()).map(|i| self.total(i)).sum();
        let title_id = format!("{}-title", self.id);
        let desc_id = format!("{}-desc", self.id);
        html! {
            figure class="chart" id=(self.id) data-total=(grand) {
                svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } role="img"
                    aria-labelledby={ (title_id) " " (desc_id) } preserveAspectRatio="none" {
                    title id=(title_id) { (self.title) }
                    desc id=(desc_id) { (self.desc) }
                    @for v in [max, max / 2] {
                        @if v > 0 {
                            line class="grid" x1=(f(LEFT)) x2=(f(W)) y1=(f(y(v))) y2=(f(y(v))) {}
                            text class="axis" x=(f(LEFT - 4.0)) y=(f(y(v) + 4.0)) text-anchor="end" { (v) }
                        }
                    }
                    line class="base" x1=(f(LEFT)) x2=(f(W)) y1=(f(y(0))) y2=(f(y(0))) {}
                    text class="axis" x=(f(LEFT - 4.0)) y=(f(y(0))) text-anchor="end" { "0" }
                    @for (i, label) in self.labels.iter().enumerate() {
                        @let x = LEFT + step * i as f64 + (step - bar_w) / 2.0;
                        g class="bar" data-label=(label) data-value=(self.total(i)) {
                            @for (s, base, v) in self.segments(i) {
                                rect class={ "series-" (s.class) } x=(f(x)) width=(f(bar_w))
                                    y=(f(y(base + v))) height=(f(y(base) - y(base + v))) {
                                    title { (label) ": " (v) " " (s.name) }
                                }
                            }
                        }
                        @if i % every == 0 {
                            text class="axis" x=(f(x + bar_w / 2.0)) y=(f(H - 6.0)) text-anchor="middle" { (label) }
                        }
                    }
                }
                figcaption {
                    strong { (self.title) } " "
                    @for s in &self.series {
                        span class="legend" { svg viewBox="0 0 10 10" class="key" aria-hidden="true" { rect class={ "series-" (s.class) } width="10" height="10" {} } (s.name) }
                    }
                }
                details class="numbers" {
                    summary { "The numbers" }
                    div class="scroll" { table {
                        thead { tr { th { "When" } @for s in &self.series { th class="num" { (s.name) } } } }
                        tbody { @for (i, label) in self.labels.iter().enumerate() {
                            @if self.total(i) > 0 { tr {
                                td { (label) }
                                @for s in &self.series { td class="num" { (s.values.get(i).copied().unwrap_or(0)) } }
                            } }
                        } }
                    } }
                }
            }
        }
    }
}

/// A horizontal bar per item (a name and its count), largest first as
/// given, with the count written next to the bar.
pub fn ranking(id: &str, title: &str, desc: &str, class: &str, items: &[(String, u64)]) -> Markup {
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let row = 22.0;
    let h = row * items.len().max(1) as f64 + 4.0;
    let (label_w, bar_max) = (180.0, W - 180.0 - 60.0);
    let title_id = format!("{id}-title");
    let desc_id = format!("{id}-desc");
    html! {
        figure class="chart ranking" id=(id) {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (f(h)) } role="img"
                aria-labelledby={ (title_id) " " (desc_id) } {
                title id=(title_id) { (title) }
                desc id=(desc_id) { (desc) }
                @for (i, (name, n)) in items.iter().enumerate() {
                    @let top = 2.0 + row * i as f64;
                    @let w = (bar_max * *n as f64 / max as f64).max(1.0);
                    g class="bar" data-label=(name) data-value=(n) {
                        text class="axis" x=(f(label_w - 6.0)) y=(f(top + 15.0)) text-anchor="end" { (name) }
                        rect class={ "series-" (class) } x=(f(label_w)) y=(f(top + 3.0)) width=(f(w)) height=(f(row - 6.0)) {
                            title { (name) ": " (n) }
                        }
                        text class="axis" x=(f(label_w + w + 6.0)) y=(f(top + 15.0)) { (n) }
                    }
                }
            }
            figcaption { strong { (title) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_carry_their_numbers_and_escape_text() {
        let chart = Bars {
            id: "c",
            title: "<b>t</b>",
            desc: "d",
            labels: vec!["a".into(), "<script>".into()],
            series: vec![
                Series {
                    name: "sent".into(),
                    class: "sent",
                    values: vec![3, 0],
                },
                Series {
                    name: "failed".into(),
                    class: "failed",
                    values: vec![1, 2],
                },
            ],
        }
        .render()
        .into_string();
        assert!(chart.contains("data-value=\"4\""), "{chart}");
        assert!(chart.contains("<title>a: 3 sent</title>"), "{chart}");
        assert!(chart.contains("data-total=\"6\""));
        assert!(!chart.contains("<script>") && chart.contains("&lt;script&gt;"));
        assert!(!chart.contains("<b>t"));
    }

    #[test]
    fn an_empty_chart_still_renders() {
        let chart = ranking("r", "T", "D", "hard", &[]).into_string();
        assert!(chart.contains("<title id=\"r-title\">T</title>"));
    }
}
