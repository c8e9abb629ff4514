from convergence.cli import main

main()
