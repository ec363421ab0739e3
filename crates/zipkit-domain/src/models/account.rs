//! Users, projects and who is a member of what.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::enums::ProjectRole;
use crate::ids::{ProjectId, UserId};
use crate::schema::{project_members, projects, users};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: UserId,
    pub email: String,
    /// A PHC-format password hash; never the password.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub password_hash: &'a str,
}

impl User {
    /// Creates a user; the email is stored lower-cased so it is unique case-insensitively.
    pub async fn create(
        conn: &mut AsyncPgConnection,
        email: &str,
        password_hash: &str,
    ) -> QueryResult<Self> {
        let email = email.trim().to_lowercase();
        diesel::insert_into(users::table)
            .values(NewUser {
                id: UserId::new(),
                email: &email,
                password_hash,
            })
            .returning(User::as_returning())
            .get_result(conn)
            .await
    }

    pub async fn find_by_email(
        conn: &mut AsyncPgConnection,
        email: &str,
    ) -> QueryResult<Option<Self>> {
        users::table
            .filter(users::email.eq(email.trim().to_lowercase()))
            .select(User::as_select())
            .first(conn)
            .await
            .optional()
    }

    pub async fn find(conn: &mut AsyncPgConnection, id: UserId) -> QueryResult<Option<Self>> {
        users::table
            .find(id)
            .select(User::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Projects this user is a member of, by name.
    pub async fn projects(&self, conn: &mut AsyncPgConnection) -> QueryResult<Vec<Project>> {
        projects::table
            .inner_join(project_members::table)
            .filter(project_members::user_id.eq(self.id))
            .order(projects::name.asc())
            .select(Project::as_select())
            .load(conn)
            .await
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = projects, check_for_backend(diesel::pg::Pg))]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Project {
    pub async fn create(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<Self> {
        diesel::insert_into(projects::table)
            .values((projects::id.eq(ProjectId::new()), projects::name.eq(name)))
            .returning(Project::as_returning())
            .get_result(conn)
            .await
    }

    /// Every project, by name (operator view).
    pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Self>> {
        projects::table
            .order(projects::name.asc())
            .select(Project::as_select())
            .load(conn)
            .await
    }

    pub async fn find(conn: &mut AsyncPgConnection, id: ProjectId) -> QueryResult<Option<Self>> {
        projects::table
            .find(id)
            .select(Project::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Adds (or re-roles) a member; idempotent.
    pub async fn add_member(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        user: UserId,
        role: ProjectRole,
    ) -> QueryResult<()> {
        diesel::insert_into(project_members::table)
            .values((
                project_members::project_id.eq(project),
                project_members::user_id.eq(user),
                project_members::role.eq(role),
            ))
            .on_conflict((project_members::project_id, project_members::user_id))
            .do_update()
            .set(project_members::role.eq(role))
            .execute(conn)
            .await
            .map(drop)
    }

    /// The member's role, or `None` when the user is not a member: every project-scoped page checks it.
    pub async fn role_of(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        user: UserId,
    ) -> QueryResult<Option<ProjectRole>> {
        project_members::table
            .find((project, user))
            .select(project_members::role)
            .first(conn)
            .await
            .optional()
    }
}
