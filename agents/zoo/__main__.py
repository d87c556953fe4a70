from agents.zoo.cli import console

console()
