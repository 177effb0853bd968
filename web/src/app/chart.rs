//! A line chart on a `<canvas>`, drawn by plotters. The series arrive already downsampled
//! (LTTB on the coordinator, and again in the page once live points pile up), so a run of
//! 10⁵ points draws a few thousand segments. Drag across the plot to zoom on steps,
//! double-click to reset; hovering shows the values at the nearest step. Pointer events, so a
//! finger on a phone does the same as a mouse (`touch-action: pan-y` keeps vertical scrolling).
//! With smoothing on, each line is drawn smoothed over a faint copy of the raw values, and
//! hovering shows both. A log-scale y axis leaves out values that are not positive.

use std::borrow::Cow;

use leptos::ev::PointerEvent;
use leptos::html::Canvas;
use leptos::prelude::*;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;

use leptos_router::params::ParamsMap;

use crate::runs::{
    MAX_SMOOTHING, Series, fmt_tick, fmt_value, log10_points, nearest, parse_smoothing, smooth,
    with_param,
};

const HEIGHT: u32 = 220;

/// Line colours (Tableau 10): distinct for up to ten runs or splits.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Where the plot area landed, for turning mouse positions into steps.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    px: (i32, i32),
    x: (f64, f64),
}

impl Geometry {
    fn step_at(&self, px: i32) -> f64 {
        let t = (px - self.px.0) as f64 / (self.px.1 - self.px.0).max(1) as f64;
        self.x.0 + t.clamp(0.0, 1.0) * (self.x.1 - self.x.0)
    }
}

#[component]
pub fn Chart(
    /// Shown above the plot and read by screen readers.
    #[prop(into)]
    title: String,
    #[prop(into)] series: Signal<Vec<Series>>,
    /// The step range shown; `None` fits all points. Shared by the charts of one page.
    zoom: RwSignal<Option<(f64, f64)>>,
    /// Smoothing weight (0 = raw values; see `runs::smooth`).
    #[prop(into)]
    smoothing: Signal<f64>,
    /// A log-scale y axis.
    #[prop(into)]
    log_y: Signal<bool>,
    /// Steps to mark with a dashed vertical line (where a live control took effect).
    #[prop(optional)]
    marks: Option<Signal<Vec<f64>>>,
) -> impl IntoView {
    let marks = marks.unwrap_or_else(|| Signal::stored(Vec::new()));
    let canvas = NodeRef::<Canvas>::new();
    let geometry = StoredValue::new(None::<Geometry>);
    let hover = RwSignal::new(None::<(i32, String)>);
    let drag_from = StoredValue::new(None::<i32>);
    let drawn_points = RwSignal::new(0usize);
    let drawn_series = RwSignal::new(0usize);
    let last_step = RwSignal::new(0u64);
    let drawn_marks = RwSignal::new(0usize);

    // The smoothed lines, only while smoothing is on (live updates then cost no copy).
    let smoothed = Memo::new(move |_| {
        let w = smoothing.get();
        (w > 0.0).then(|| {
            series.with(|all| {
                all.iter()
                    .map(|s| Series {
                        label: s.label.clone(),
                        points: smooth(&s.points, w),
                    })
                    .collect::<Vec<_>>()
            })
        })
    });

    // Each chart draws in a task of its own (a zero timeout), coalescing the changes that came
    // meanwhile: a page's four charts never redraw in one long task, and a burst of live
    // points costs one drawing.
    let scheduled = StoredValue::new(false);
    Effect::new(move |_| {
        zoom.track();
        log_y.track();
        series.track();
        smoothed.track();
        marks.track();
        canvas.track();
        if scheduled.get_value() {
            return;
        }
        scheduled.set_value(true);
        leptos::task::spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(0).await;
            if scheduled.try_set_value(false).is_some() {
                return; // the chart is gone
            }
            let (Some(c), Some(z), Some(log)) = (
                canvas.get_untracked(),
                zoom.try_get_untracked(),
                log_y.try_get_untracked(),
            ) else {
                return;
            };
            let m = marks.try_get_untracked().unwrap_or_default();
            series.try_with_untracked(|s| {
                smoothed.with_untracked(|sm| {
                    geometry.set_value(draw(&c, s, sm.as_deref(), &m, z, log))
                });
                drawn_marks.set(m.len());
                drawn_points.set(s.iter().map(|s| s.points.len()).sum());
                drawn_series.set(s.len());
                last_step.set(
                    s.iter()
                        .filter_map(|s| s.points.last().map(|p| p.0 as u64))
                        .max()
                        .unwrap_or(0),
                );
            });
        });
    });

    // The values at the step under `px`; a touch shows them on pointer-down.
    let show = move |px: i32| {
        let Some(g) = geometry.get_value() else {
            return;
        };
        let step = g.step_at(px);
        let parts: Vec<String> = series.with_untracked(|all| {
            smoothed.with_untracked(|sm| {
                let lines = sm.as_deref().unwrap_or(all);
                all.iter()
                    .zip(lines)
                    .filter_map(|(raw, line)| {
                        nearest(&line.points, step).map(|i| {
                            let (x, y) = line.points[i];
                            let value = if sm.is_some() {
                                format!("{} (raw {})", fmt_value(y), fmt_value(raw.points[i].1))
                            } else {
                                fmt_value(y)
                            };
                            format!("{} {value} @ {}", line.label, x as u64)
                        })
                    })
                    .collect()
            })
        });
        hover.set((!parts.is_empty()).then(|| (px, parts.join(" · "))));
    };
    let on_up = move |ev: PointerEvent| {
        let (Some(from), Some(g)) = (drag_from.get_value(), geometry.get_value()) else {
            return;
        };
        drag_from.set_value(None);
        let to = ev.offset_x();
        if (to - from).abs() > 6 {
            let (a, b) = (g.step_at(from.min(to)), g.step_at(from.max(to)));
            zoom.set(Some((a.floor(), b.ceil())));
        }
    };
    let label = title.clone();
    // The legend is HTML beside the title, not drawn by plotters: plotters measures legend
    // text by adding a span to the page and reading its size, a forced layout per label per
    // drawing (tens of milliseconds on the main thread when a page is busy).
    let labels = Memo::new(move |_| {
        series.with(|all| all.iter().map(|s| s.label.clone()).collect::<Vec<_>>())
    });
    view! {
        <figure class="chart">
            <figcaption>{title}<span class="legend">
                {move || labels.get().into_iter().enumerate().map(|(i, l)| {
                    let RGBColor(r, g, b) = COLORS[i % COLORS.len()];
                    view! { <span class="key"><i style=format!("background: rgb({r}, {g}, {b})")></i>{l}</span> }
                }).collect_view()}
            </span></figcaption>
            <div class="plot">
                <canvas
                    node_ref=canvas
                    height=HEIGHT
                    role="img"
                    aria-label=format!("{label} over training steps; drag to zoom, double-click to reset")
                    data-points=move || drawn_points.get()
                    data-series=move || drawn_series.get()
                    data-last-step=move || last_step.get()
                    data-marks=move || drawn_marks.get()
                    data-smoothing=move || smoothing.get()
                    data-log-y=move || log_y.get().to_string()
                    on:pointermove=move |ev: PointerEvent| show(ev.offset_x())
                    on:pointerleave=move |ev: PointerEvent| {
                        // A lifted finger leaves too: keep what the tap showed.
                        if ev.pointer_type() != "touch" {
                            hover.set(None);
                        }
                        drag_from.set_value(None);
                    }
                    on:pointerdown=move |ev: PointerEvent| {
                        drag_from.set_value(Some(ev.offset_x()));
                        show(ev.offset_x());
                    }
                    on:pointerup=on_up
                    on:dblclick=move |_| zoom.set(None)
                ></canvas>
                {move || hover.get().map(|(px, text)| view! {
                    <div class="tooltip" style=format!("left: {}px", px + 12)>{text}</div>
                })}
            </div>
        </figure>
    }
}

/// How a page's charts are drawn, kept in the URL (`smooth=`, `log=loss`) so a link reloads
/// to the same view.
#[derive(Debug, Clone, Copy)]
pub struct ChartView {
    /// Smoothing of measured values (not of the learning rate, a schedule).
    pub smoothing: RwSignal<f64>,
    /// A log-scale y axis on loss charts.
    pub log_loss: RwSignal<bool>,
}

impl ChartView {
    pub fn from_query(q: &ParamsMap) -> ChartView {
        ChartView {
            smoothing: RwSignal::new(
                q.get("smooth")
                    .and_then(|v| parse_smoothing(&v))
                    .unwrap_or(0.0),
            ),
            log_loss: RwSignal::new(q.get("log").is_some_and(|v| v == "loss")),
        }
    }

    /// `url` (a path and query) with this view's parameters set; reads (and so tracks) both.
    pub fn url(&self, url: &str) -> String {
        let w = self.smoothing.get();
        let smooth = (w > 0.0).then(|| w.to_string());
        let url = with_param(url, "smooth", smooth.as_deref());
        with_param(&url, "log", self.log_loss.get().then_some("loss"))
    }
}

/// The controls of a page's charts: smoothing from off to `MAX_SMOOTHING`, a log-scale loss.
#[component]
pub fn ChartControls(view: ChartView) -> impl IntoView {
    let ChartView {
        smoothing,
        log_loss,
    } = view;
    view! {
        <div class="chart-controls">
            <label for="smoothing">"Smoothing"</label>
            <input id="smoothing" type="range" min="0" max=MAX_SMOOTHING step="0.01"
                prop:value=move || smoothing.get().to_string()
                on:input=move |ev| {
                    if let Some(w) = parse_smoothing(&event_target_value(&ev)) {
                        smoothing.set(w);
                    }
                }/>
            <output for="smoothing">{move || match smoothing.get() {
                0.0 => "off".to_string(),
                w => format!("{w:.2}"),
            }}</output>
            <label>
                <input id="log-loss" type="checkbox" prop:checked=move || log_loss.get()
                    on:change=move |ev| log_loss.set(event_target_checked(&ev))/>
                " Log-scale loss"
            </label>
        </div>
    }
}

/// Create the canvas's 2D context CPU-backed, before plotters asks for it (a canvas has one
/// context: later `getContext("2d")` calls return this one). `willReadFrequently` is the
/// standard way to ask for that, and we use it for that effect, not to read pixels back. A
/// GPU-backed canvas makes the drawing calls wait on the browser's GPU process, which is busy
/// when a tab trains on WebGPU or has no real GPU: the playground's first drawings then blocked
/// the page for 56-103 ms in headless Chromium (SwiftShader); CPU-backed, no long task in most
/// runs and at most 74 ms (CI). A few thousand line segments on a 220-pixel-high canvas are
/// cheap to rasterise on the CPU.
fn cpu_backed(canvas: &web_sys::HtmlCanvasElement) {
    let attributes = web_sys::ContextAttributes2d::new();
    attributes.set_will_read_frequently(true);
    // An error here (a canvas with another kind of context) shows up as plotters' `None`.
    let _ = canvas.get_context_with_context_options("2d", &attributes);
}

/// Draw the series (over faint raw lines when `smoothed` is given, one per series) and a
/// dashed line at each of `marks`' steps; returns the plot geometry (None if the canvas could
/// not be used).
fn draw(
    canvas: &web_sys::HtmlCanvasElement,
    series: &[Series],
    smoothed: Option<&[Series]>,
    marks: &[f64],
    zoom: Option<(f64, f64)>,
    log_y: bool,
) -> Option<Geometry> {
    // On a log axis the chart is drawn in log10 space and labelled back in values.
    let as_log = |all: &[Series]| -> Vec<Series> {
        all.iter()
            .map(|s| Series {
                label: s.label.clone(),
                points: log10_points(&s.points),
            })
            .collect()
    };
    let (series, smoothed): (Cow<[Series]>, Option<Cow<[Series]>>) = if log_y {
        (as_log(series).into(), smoothed.map(|s| as_log(s).into()))
    } else {
        (series.into(), smoothed.map(Cow::from))
    };
    let (series, smoothed) = (&*series, smoothed.as_deref());
    let width = match canvas.client_width() {
        w if w > 0 => w as u32,
        _ => 600,
    };
    if canvas.width() != width {
        canvas.set_width(width);
    }
    if canvas.height() != HEIGHT {
        canvas.set_height(HEIGHT);
    }
    cpu_backed(canvas);
    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    root.fill(&WHITE).ok()?;

    let in_range = |x: f64| zoom.is_none_or(|(a, b)| x >= a && x <= b);
    let visible = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, _)| in_range(*x))
    };
    let (mut x0, mut x1) = match zoom {
        Some(range) => range,
        None => visible().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| {
            (a.min(*x), b.max(*x))
        }),
    };
    let (mut y0, mut y1) = visible().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| {
        (a.min(*y), b.max(*y))
    });
    if !x0.is_finite() || !y0.is_finite() {
        let style = ("sans-serif", 14)
            .into_font()
            .color(&RGBColor(120, 120, 120));
        root.draw_text("no points yet", &style, (12, 20)).ok()?;
        root.present().ok()?;
        return None;
    }
    if x1 - x0 < 1.0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    // A flat line (a constant learning rate) gets a band around it, not a sliver.
    let pad = if y1 - y0 > y1.abs().max(y0.abs()) * 1e-3 {
        (y1 - y0) * 0.05
    } else {
        (y1.abs() * 0.1).max(1e-9)
    };
    y0 -= pad;
    y1 += pad;

    let mut chart = ChartBuilder::on(&root)
        .margin(8)
        .x_label_area_size(26)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .ok()?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| fmt_tick(if log_y { 10f64.powf(*y) } else { *y }))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(220, 220, 220))
        .label_style(("sans-serif", 12))
        .draw()
        .ok()?;
    // Behind the lines: where a live control (pause, learning rate, checkpoint) took effect.
    let mark_style = RGBColor(180, 83, 9).mix(0.7).stroke_width(1);
    for &m in marks.iter().filter(|&&m| m >= x0 && m <= x1) {
        chart
            .draw_series(DashedLineSeries::new([(m, y0), (m, y1)], 4, 4, mark_style))
            .ok()?;
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let visible = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
            points
                .iter()
                .copied()
                .filter(|(x, _)| in_range(*x))
                .collect()
        };
        let mut pts = visible(&s.points);
        let few = pts.len() < 40;
        if let Some(line) = smoothed.and_then(|all| all.get(i)) {
            chart
                .draw_series(LineSeries::new(
                    pts.iter().copied(),
                    color.mix(0.25).stroke_width(1),
                ))
                .ok()?;
            pts = visible(&line.points);
        }
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .ok()?;
        if few {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .ok()?;
        }
    }
    let (px, _) = chart.plotting_area().get_pixel_range();
    root.present().ok()?;
    Some(Geometry {
        px: (px.start, px.end),
        x: (x0, x1),
    })
}
