from afinar.cli import main

main()
