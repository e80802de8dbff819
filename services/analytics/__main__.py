from crm.cli import main

raise SystemExit(main(["run", "analytics", *__import__("sys").argv[1:]]))
