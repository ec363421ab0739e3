DROP TABLE access_tokens;
DROP TABLE project_members;
DROP TABLE projects;
DROP TABLE users;
