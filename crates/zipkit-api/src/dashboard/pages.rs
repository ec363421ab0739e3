//! The dashboard's HTML, as compile-time checked maud templates.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use zipkit_domain::models::Project;

use super::context::Member;

/// The frame of every page; `signed_in` carries (email, CSRF token) for the sign-out form.
pub fn layout(title: &str, signed_in: Option<(&str, &str)>, body: Markup) -> Markup {
    layout_with(title, signed_in, false, body)
}

/// [`layout`], optionally reloading itself every few seconds (used while something is still
/// moving, so progress shows without JavaScript).
pub fn layout_with(
    title: &str,
    signed_in: Option<(&str, &str)>,
    refresh: bool,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh {
                    meta http-equiv="refresh" content="3";
                }
                title { (title) " · zipkit" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body {
                header {
                    a.brand href="/dashboard" { "zipkit" }
                    @if let Some((email, csrf)) = signed_in {
                        form method="post" action="/dashboard/logout" {
                            span.muted { (email) " · " }
                            input type="hidden" name="csrf" value=(csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form; `email` is kept after a failed attempt, the password never is.
pub fn login(csrf: &str, email: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            div.card.narrow {
                h1 { "Sign in" }
                form method="post" action="/dashboard/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="email" { "Email" }
                    input #email type="email" name="email" value=(email) required autocomplete="username";
                    label for="password" { "Password" }
                    input #password type="password" name="password" required autocomplete="current-password";
                    @if let Some(error) = error {
                        p.error role="alert" { (error) }
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// The project picker: only the projects the user is a member of.
pub fn projects(email: &str, csrf: &str, projects: &[Project]) -> Markup {
    layout(
        "Projects",
        Some((email, csrf)),
        html! {
            div.card {
                h1 { "Projects" }
                @if projects.is_empty() {
                    p.muted { "You are not a member of any project yet. An operator can add you with "
                        code { "zipkit-api project add-member" } "." }
                } @else {
                    ul.projects {
                        @for project in projects {
                            li {
                                a href={ "/dashboard/projects/" (project.id) "/zips" } { strong { (project.name) } }
                                " "
                                span.muted { "created " (project.created_at.format("%Y-%m-%d")) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The sections of a project, in the order of its tab bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Zips,
    Buckets,
    Tokens,
    Webhooks,
}

impl Section {
    const ALL: [(Self, &'static str, &'static str); 4] = [
        (Self::Zips, "zips", "Zips"),
        (Self::Buckets, "buckets", "Buckets"),
        (Self::Tokens, "tokens", "Access tokens"),
        (Self::Webhooks, "webhooks", "Webhooks"),
    ];
}

/// A project page: the project's name, its sections as tabs, then `body`.
pub fn project_page(member: &Member, section: Section, title: &str, body: Markup) -> Markup {
    project_page_with(member, section, title, false, body)
}

pub fn project_page_with(
    member: &Member,
    section: Section,
    title: &str,
    refresh: bool,
    body: Markup,
) -> Markup {
    let base = member.base();
    layout_with(
        title,
        Some((member.email(), member.csrf())),
        refresh,
        html! {
            div.project-head {
                span.muted { "Project" }
                strong { (member.project.name) }
                a.muted href="/dashboard" { "switch" }
            }
            nav.tabs aria-label="Project sections" {
                @for (s, path, label) in Section::ALL {
                    @if s == section {
                        a.active href={ (base) "/" (path) } aria-current="page" { (label) }
                    } @else {
                        a href={ (base) "/" (path) } { (label) }
                    }
                }
            }
            (body)
        },
    )
}

/// Messages for the fields of a form, by field name.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One labelled input with its message, if any; `value` is what the user typed (never a secret).
pub fn field(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    errors: &FieldErrors,
    hint: Option<&str>,
) -> Markup {
    let error = errors.get(name);
    let id = format!("f-{name}");
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            @if kind == "password" {
                input id=(id) type="password" name=(name) autocomplete="off" aria-invalid=[error.map(|_| "true")];
            } @else {
                input id=(id) type=(kind) name=(name) value=(value) aria-invalid=[error.map(|_| "true")];
            }
            @if let Some(hint) = hint { small.muted { (hint) } }
            @if let Some(error) = error { p.error.field-error role="alert" { (error) } }
        }
    }
}

/// A hidden CSRF input for a form.
pub fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A notice at the top of a page: `kind` is `ok` or `bad`.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { div class={ "notice " (kind) } role=(if kind == "bad" { "alert" } else { "status" }) { (text) } }
}

/// A message from the shared operations (which start lowercase) as a sentence on the page.
pub fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

pub fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

pub fn moment(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Bytes as people read them (binary units).
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A value shown once (a token or signing secret) with a copy button; without JavaScript the
/// read-only field can be selected and copied by hand.
pub fn shown_once(label: &str, value: &str) -> Markup {
    html! {
        div.secret-once {
            label for="shown-once" { (label) }
            div.copy-row {
                input #shown-once type="text" readonly value=(value) data-copy;
                button.copy type="button" hidden data-copy-target="shown-once" { "Copy" }
            }
            p.muted { "This is the only time it is shown. Store it now; zipkit keeps only what it needs to check it." }
        }
        script src="/dashboard/copy.js" defer {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn a_field_shows_its_error_and_never_echoes_a_password() {
        let mut errors = FieldErrors::default();
        errors.add("secret", "the secret is required");
        let html = field("Secret", "secret", "password", "typed", &errors, None).into_string();
        assert!(html.contains("the secret is required"));
        assert!(!html.contains("typed"));
        let html = field("Name", "name", "text", "mine", &errors, None).into_string();
        assert!(html.contains("value=\"mine\""));
        assert!(!html.contains("role=\"alert\""));
    }
}
