from crm.cli import main

raise SystemExit(main(["run", "connectors", *__import__("sys").argv[1:]]))
