//! The dashboard's HTML, as compile-time checked maud templates.

use maud::{DOCTYPE, Markup, html};
use zipkit_domain::models::Project;

/// The frame of every page; `signed_in` carries (email, CSRF token) for the sign-out form.
pub fn layout(title: &str, signed_in: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
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
                                strong { (project.name) }
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
