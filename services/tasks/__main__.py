from crm.cli import main

raise SystemExit(main(["run", "tasks", *__import__("sys").argv[1:]]))
