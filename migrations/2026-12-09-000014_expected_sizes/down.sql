DROP TABLE zip_expected_sizes;
