DROP TABLE zip_download_links;
