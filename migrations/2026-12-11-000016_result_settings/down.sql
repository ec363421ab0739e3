DROP TABLE zip_result_settings;
