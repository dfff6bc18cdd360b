FROM ubuntu:latest
RUN apt-get update && apt-get install -y golang
COPY ./main.go ./main.go
RUN go build -o helloworld main.go # compile our program
ENTRYPOINT ./helloworld # run our program
