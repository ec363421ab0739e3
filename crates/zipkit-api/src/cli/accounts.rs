//! `zipkit-api user`, `project` and `token`: dashboard users, projects and their members, and
//! access tokens.

use clap::{Subcommand, ValueEnum};
use secrecy::ExposeSecret;
use serde_json::json;
use zipkit_domain::enums::ProjectRole;
use zipkit_domain::models::{AccessToken, Project, User};
use zipkit_domain::{AccessTokenId, ProjectId};

use crate::admin;
use crate::admin::passwords;
use crate::settings::Settings;

use super::{CliError, Output, connect, day, project_exists, read_secret};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a dashboard user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project, optionally with its first owner.
    Create {
        #[arg(long)]
        name: String,
        /// Email of an existing user to make owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Add a user to a project (or change their role).
    AddMember {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum, default_value_t = Role::Member)]
        role: Role,
    },
    /// List every project.
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    Owner,
    Member,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an access token; it is printed once, on standard output.
    Create {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        name: String,
    },
    /// List a project's tokens (never the tokens themselves).
    List {
        #[arg(long)]
        project: ProjectId,
    },
    /// Revoke a token.
    Revoke {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        token: AccessTokenId,
    },
}

pub async fn user(
    settings: &Settings,
    command: UserCommand,
    output: Output,
) -> Result<(), CliError> {
    let UserCommand::Create { email } = command;
    let email = email.trim().to_lowercase();
    if !(3..=320).contains(&email.len()) || !email.contains('@') {
        return Err(CliError::invalid("--email: not an email address"));
    }
    let password = read_secret("Password: ")?;
    let hash = passwords::hash(password.expose_secret(), &settings.passwords)
        .map_err(|e| CliError::invalid(e.to_string()))?;
    let mut conn = connect(settings).await?;
    if User::find_by_email(&mut conn, &email).await?.is_some() {
        return Err(CliError::new(
            6,
            format!("a user with email {email} already exists"),
        ));
    }
    let user = User::create(&mut conn, &email, &hash).await?;
    output.report(
        || format!("created user {} ({})", user.email, user.id),
        json!({"object": "user", "id": user.id, "email": user.email}),
    );
    Ok(())
}

pub async fn project(
    settings: &Settings,
    command: ProjectCommand,
    output: Output,
) -> Result<(), CliError> {
    let mut conn = connect(settings).await?;
    match command {
        ProjectCommand::Create { name, owner } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(CliError::invalid("--name: 1 to 200 characters"));
            }
            let owner =
                match owner {
                    Some(email) => Some(User::find_by_email(&mut conn, &email).await?.ok_or_else(
                        || CliError::not_found(format!("no user with email {email}")),
                    )?),
                    None => None,
                };
            let project = Project::create(&mut conn, name).await?;
            if let Some(owner) = &owner {
                Project::add_member(&mut conn, project.id, owner.id, ProjectRole::Owner).await?;
            }
            output.report(
                || format!("created project {} ({})", project.name, project.id),
                json!({
                    "object": "project",
                    "id": project.id,
                    "name": project.name,
                    "owner": owner.as_ref().map(|o| &o.email),
                }),
            );
        }
        ProjectCommand::AddMember {
            project,
            email,
            role,
        } => {
            project_exists(&mut conn, project).await?;
            let user = User::find_by_email(&mut conn, &email)
                .await?
                .ok_or_else(|| CliError::not_found(format!("no user with email {email}")))?;
            let role = match role {
                Role::Owner => ProjectRole::Owner,
                Role::Member => ProjectRole::Member,
            };
            Project::add_member(&mut conn, project, user.id, role).await?;
            println!(
                "{} is now {} of project {project}",
                user.email,
                role.as_str()
            );
        }
        ProjectCommand::List => {
            println!("{:<36}  {:<16}  NAME", "ID", "CREATED");
            for p in Project::list(&mut conn).await? {
                println!("{:<36}  {:<16}  {}", p.id, day(p.created_at), p.name);
            }
        }
    }
    Ok(())
}

pub async fn token(
    settings: &Settings,
    command: TokenCommand,
    output: Output,
) -> Result<(), CliError> {
    let mut conn = connect(settings).await?;
    match command {
        TokenCommand::Create { project, name } => {
            project_exists(&mut conn, project).await?;
            let created = admin::tokens::create(&mut conn, project, &name)
                .await
                .map_err(from_token_error)?;
            output.secret(
                || {
                    format!(
                        "created token {} ({}); it is shown once, below:",
                        created.stored.prefix, created.stored.id
                    )
                },
                created.secret.expose_secret(),
                json!({
                    "object": "token",
                    "id": created.stored.id,
                    "project_id": project,
                    "name": name,
                    "prefix": created.stored.prefix,
                    "secret": created.secret.expose_secret(),
                }),
            );
        }
        TokenCommand::List { project } => {
            project_exists(&mut conn, project).await?;
            println!(
                "{:<36}  {:<12}  {:<16}  {:<16}  {:<8}  NAME",
                "ID", "PREFIX", "CREATED", "LAST USED", "STATE"
            );
            for t in AccessToken::list(&mut conn, project).await? {
                let last = t.last_used_at.map_or_else(|| "never".to_owned(), day);
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!(
                    "{:<36}  {:<12}  {:<16}  {:<16}  {:<8}  {}",
                    t.id,
                    t.prefix,
                    day(t.created_at),
                    last,
                    state,
                    t.name
                );
            }
        }
        TokenCommand::Revoke { project, token } => {
            project_exists(&mut conn, project).await?;
            if admin::tokens::revoke(&mut conn, project, token)
                .await
                .map_err(from_token_error)?
            {
                println!("revoked token {token}");
            } else {
                println!("token {token} was already revoked");
            }
        }
    }
    Ok(())
}

fn from_token_error(err: admin::tokens::TokenAdminError) -> CliError {
    use admin::tokens::TokenAdminError;
    match err {
        TokenAdminError::InvalidName => CliError::invalid("--name: 1 to 200 characters"),
        TokenAdminError::NotFound => CliError::not_found("no such token in this project"),
        other => CliError::new(1, other.to_string()),
    }
}
