-- A GET with the benchmark owner's key.
wrk.headers["x-api-key"] = os.getenv("POTPIE_KEY")
