from crm.cli import main

raise SystemExit(main(["run", "contacts", *__import__("sys").argv[1:]]))
