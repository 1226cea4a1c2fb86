-- Run once by the postgres image on an empty volume (as POSTGRES_USER, who owns them).
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
