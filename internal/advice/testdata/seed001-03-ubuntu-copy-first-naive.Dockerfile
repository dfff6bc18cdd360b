FROM ubuntu:latest
COPY ./main.go ./main.go
RUN apt-get update && apt-get install -y golang
RUN go build -o helloworld main.go # compile our program
ENTRYPOINT ./helloworld # run our program
