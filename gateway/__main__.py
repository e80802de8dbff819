from crm.cli import main

raise SystemExit(main(["run", "gateway", *__import__("sys").argv[1:]]))
